//! One model, included by `#[path]` under two module paths, as a second binary would.

/// A catalog entry type that both "binaries" share.
#[derive(shmarena::rkyv::Archive, shmarena::rkyv::Serialize, shmarena::rkyv::Deserialize)]
#[rkyv(crate = shmarena::rkyv, derive(Debug))]
pub struct Catalog {
    pub items: Vec<String>,
    pub weights: Vec<f32>,
}

impl shmarena::StableName for Catalog {
    const NAME: &'static str = "tests.Catalog";
    const VERSION: u32 = 1;
}
