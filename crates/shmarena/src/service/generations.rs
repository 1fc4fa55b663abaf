//! Tasks that read the current generation of a published arena.
//!
//! A long-running process pool serves many tasks while the data they read may be replaced: a
//! lexicon refreshed hourly, published by name with a [`Publisher`](super::Publisher) (or
//! `arena-serve`), each replacement a new generation. Here each worker process (each thread)
//! holds one [`Subscription`] per name, made at its first task, and each task asks it for the
//! current generation once, at the task's start: [`with_generation`] checks the shared
//! generation counter (one atomic load when nothing changed), fetches the new arena if it
//! moved, and runs the task on that one arena. A task therefore sees exactly one generation
//! from start to end, even if the publisher replaces it meanwhile: the arena it got holds its
//! own mapping, which stays valid and unchanged until the task drops it. The next task starts
//! on the newest generation.
//!
//! It uses nothing of a pool: a task is a function that calls [`with_generation`] (a named job
//! of a `shmarena-pool` pool in spawn mode), or a closure that [`generational`] wraps (fork
//! mode). `shmarena-pool` re-exports this module as `shmarena_pool::generations` (feature
//! `shmarena`), with a pool example.
//!
//! ```
//! # fn main() -> shmarena::Result<()> {
//! # let name = format!("doc-generations-{}", std::process::id());
//! use shmarena::service::generations;
//!
//! /// Scores one word with the lexicon generation current when the task starts.
//! fn score(name: &str, word: &str) -> (u64, f32) {
//!     generations::with_generation(name, |lexicon, generation| {
//!         let weights = lexicon.slice::<f32>("weights").expect("weights");
//!         (generation, weights[word.len() % weights.len()])
//!     })
//!     .expect("the lexicon is published")
//! }
//!
//! let lexicon = |w: f32| -> shmarena::Result<shmarena::Arena> {
//!     let mut b = shmarena::ArenaOptions::new().create()?;
//!     b.put_slice("weights", &[w, w])?;
//!     Ok(b.seal()?)
//! };
//! let publisher = lexicon(1.0)?.publish(&name)?;
//! assert_eq!(score(&name, "a"), (1, 1.0));
//! publisher.publish(lexicon(2.0)?)?; // generation 2
//! assert_eq!(score(&name, "a"), (2, 2.0));
//! # generations::release(&name);
//! # Ok(()) }
//! ```
//!
//! An idle worker keeps the generation of its last task mapped until its next task (or
//! [`release`]): the kernel frees an old generation when the last worker that read it has moved
//! on.

use std::cell::RefCell;
use std::collections::HashMap;

use super::{ConnectOptions, Subscription};
use crate::arena::Arena;

thread_local! {
    /// This worker's subscriptions, by published name. Per thread, so a pool that runs tasks on
    /// threads gets one per thread; a forked worker starts with a copy of its parent's (whose
    /// mappings and descriptors it inherits, so they stay valid).
    static SUBSCRIPTIONS: RefCell<HashMap<String, Subscription>> = RefCell::new(HashMap::new());
}

/// The current generation of the arena published as `name` and its number, using this worker's
/// subscription (made on first use with default [`ConnectOptions`]).
///
/// On an error fetching a new generation the subscription is kept, and the next call tries
/// again; use [`with_generation`] to run a whole task on one generation.
pub fn current(name: &str) -> crate::Result<(Arena, u64)> {
    current_with(&ConnectOptions::new(), name)
}

/// [`current`], subscribing with `options` if this worker has no subscription to `name` yet.
pub fn current_with(options: &ConnectOptions, name: &str) -> crate::Result<(Arena, u64)> {
    SUBSCRIPTIONS.with(|subs| {
        let mut subs = subs.borrow_mut();
        let sub = match subs.entry(name.to_owned()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(options.subscribe(name)?),
        };
        let cur = sub.current()?;
        Ok((cur.arena().clone(), cur.generation()))
    })
}

/// Runs `task` on the current generation of the arena published as `name`: the task boundary.
/// The arena `task` gets does not change while it runs, whatever the publisher does; the
/// `u64` is its generation (1 for the first arena published).
///
/// Errors are those of [`subscribe`](super::subscribe) and [`Subscription::current`] (not
/// published, the publisher died between a change and the fetch, ...); `task` does not run then.
pub fn with_generation<R>(name: &str, task: impl FnOnce(&Arena, u64) -> R) -> crate::Result<R> {
    let (arena, generation) = current(name)?;
    Ok(task(&arena, generation))
}

/// Wraps a closure for a process pool that takes closures (`shmarena-pool` in fork mode): each
/// call runs `task` with the current generation of `name` (as [`with_generation`]), and an
/// error reaching it becomes `Err(message)`.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let name = format!("doc-generational-{}", std::process::id());
/// use shmarena::service::generations;
/// let mut b = shmarena::ArenaOptions::new().create()?;
/// b.put_slice("ids", &[7u32, 8, 9])?;
/// let publisher = b.seal()?.publish(&name)?;
///
/// let job = generations::generational(name.clone(), |lexicon, generation, i: u32| {
///     (generation, lexicon.slice::<u32>("ids").map(|ids| ids[i as usize]).unwrap_or(0))
/// });
/// assert_eq!(job(2)?, (1, 9));
/// assert!(generations::release(&name));
/// drop(publisher);
/// assert!(job(2).is_err()); // nobody publishes the name now
/// # Ok(()) }
/// ```
pub fn generational<I, O>(
    name: impl Into<String>,
    task: impl Fn(&Arena, u64, I) -> O,
) -> impl Fn(I) -> Result<O, String> {
    let name = name.into();
    move |input| {
        with_generation(&name, |arena, generation| task(arena, generation, input))
            .map_err(|e| error_chain(&e))
    }
}

/// Drops this worker's subscription to `name`, if any, and with it the generation it holds
/// (the next [`current`] subscribes again). Returns whether there was one.
pub fn release(name: &str) -> bool {
    SUBSCRIPTIONS.with(|subs| subs.borrow_mut().remove(name).is_some())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
