//! Prompt-cache-aware fan-out: sibling agents that share a prompt prefix take turns so that the
//! first request of the group writes the provider's cache and the others read it.
//!
//! Siblings are agents of one run with the same system prompt and tool list (a *group*). When an
//! agent is started, its prompt is compared with the group's recent prompts; a long enough common
//! prefix (cut back to a line break, so that siblings whose tasks differ after a shared context
//! agree on where it ends) is registered. Before its first request an agent asks for a turn on the
//! longest registered prefix its prompt starts with: the first to ask becomes the writer and
//! sends at once; the others wait until the writer's answer is back (the cache entry exists from
//! then on), then send, marking the same prefix, and read it.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// Common prefixes shorter than this are not worth registering.
pub const MIN_SHARED_PREFIX_BYTES: usize = 1024;
/// Recent prompts of a group that a new prompt is compared with.
const RECENT_PROMPTS: usize = 16;
/// Registered prefixes kept per group.
const MAX_PREFIXES: usize = 64;

/// The shared prefixes of one run's agents, and whose turn it is to write each to the cache.
#[derive(Debug, Default)]
pub struct SharedPrefixes {
    groups: Mutex<HashMap<u64, Group>>,
}

#[derive(Debug, Default)]
struct Group {
    recent: VecDeque<Arc<str>>,
    /// Registered prefixes: length and hash of the text.
    prefixes: Vec<(usize, u64)>,
    /// Cache state per prefix (length 0: the system prompt and tools alone).
    turns: HashMap<(usize, u64), Turn>,
}

#[derive(Debug)]
struct Turn {
    status: Status,
    notify: Arc<Notify>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Unwritten,
    Writing,
    Written,
}

/// The answer to [`SharedPrefixes::take_turn`].
#[derive(Debug)]
pub enum CacheTurn {
    /// This agent writes the cache: send now, then call [`WriterTurn::written`] on success.
    Writer(WriterTurn),
    /// The prefix is written (or waiting for it took too long): send now.
    Reader,
}

/// The writer's claim on a prefix. Dropped without [`written`](Self::written) (the request
/// failed), the claim passes to the next sibling that asks.
#[derive(Debug)]
pub struct WriterTurn {
    prefixes: Arc<SharedPrefixes>,
    group: u64,
    key: (usize, u64),
    done: bool,
}

impl WriterTurn {
    /// The writer's request succeeded: the prefix is in the cache; wake the waiting siblings.
    pub fn written(mut self) {
        self.finish(Status::Written);
    }

    fn finish(&mut self, status: Status) {
        self.done = true;
        let mut groups = self.prefixes.lock();
        if let Some(turn) = groups
            .get_mut(&self.group)
            .and_then(|group| group.turns.get_mut(&self.key))
        {
            turn.status = status;
            turn.notify.notify_waiters();
        }
    }
}

impl Drop for WriterTurn {
    fn drop(&mut self) {
        if !self.done {
            self.finish(Status::Unwritten);
        }
    }
}

fn text_hash(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// The length of the common prefix of `a` and `b`, cut back to just after a line break (or,
/// without one, a space), so that it ends where a shared context ends.
fn shared_context_len(a: &str, b: &str) -> usize {
    let common = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let head = &a.as_bytes()[..common];
    head.iter()
        .rposition(|&byte| byte == b'\n')
        .or_else(|| head.iter().rposition(|&byte| byte == b' '))
        .map_or(0, |position| position + 1)
}

impl SharedPrefixes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a started agent's prompt, registering the prefix it shares with a recent sibling.
    pub fn register(&self, group: u64, prompt: &str) {
        let mut groups = self.lock();
        let group = groups.entry(group).or_default();
        let covered = group
            .prefixes
            .iter()
            .any(|&(len, hash)| prompt.len() > len && text_hash(&prompt[..len]) == hash);
        if !covered {
            let best = group
                .recent
                .iter()
                .map(|other| shared_context_len(prompt, other))
                .max()
                .unwrap_or(0);
            if best >= MIN_SHARED_PREFIX_BYTES
                && best < prompt.len()
                && group.prefixes.len() < MAX_PREFIXES
            {
                group.prefixes.push((best, text_hash(&prompt[..best])));
            }
        }
        if group.recent.len() == RECENT_PROMPTS {
            group.recent.pop_front();
        }
        group.recent.push_back(Arc::from(prompt));
    }

    /// The length of the longest registered prefix `prompt` starts with (0: none).
    pub fn shared_len(&self, group: u64, prompt: &str) -> usize {
        let groups = self.lock();
        let Some(group) = groups.get(&group) else {
            return 0;
        };
        group
            .prefixes
            .iter()
            .filter(|&&(len, hash)| prompt.len() > len && text_hash(&prompt[..len]) == hash)
            .map(|&(len, _)| len)
            .max()
            .unwrap_or(0)
    }

    /// Waits for this agent's turn on `prefix` (the shared part of its prompt; empty for the
    /// system prompt and tools alone): the first to ask writes, later ones wait for the writer's
    /// answer, at most `max_wait`.
    pub async fn take_turn(
        self: &Arc<Self>,
        group: u64,
        prefix: &str,
        max_wait: Duration,
    ) -> CacheTurn {
        let key = (
            prefix.len(),
            if prefix.is_empty() {
                0
            } else {
                text_hash(prefix)
            },
        );
        loop {
            let notify = {
                let mut groups = self.lock();
                let turn = groups
                    .entry(group)
                    .or_default()
                    .turns
                    .entry(key)
                    .or_insert_with(|| Turn {
                        status: Status::Unwritten,
                        notify: Arc::new(Notify::new()),
                    });
                match turn.status {
                    Status::Written => return CacheTurn::Reader,
                    Status::Unwritten => {
                        turn.status = Status::Writing;
                        return CacheTurn::Writer(WriterTurn {
                            prefixes: Arc::clone(self),
                            group,
                            key,
                            done: false,
                        });
                    }
                    Status::Writing => Arc::clone(&turn.notify),
                }
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            // Registered before the status is looked at again, so a wake-up in between is not lost.
            notified.as_mut().enable();
            let writing = {
                let groups = self.lock();
                groups
                    .get(&group)
                    .and_then(|g| g.turns.get(&key))
                    .is_some_and(|turn| turn.status == Status::Writing)
            };
            if writing && tokio::time::timeout(max_wait, notified).await.is_err() {
                // The writer is slow (retrying, perhaps); stop waiting and pay for a write.
                return CacheTurn::Reader;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> String {
        "shared context line\n".repeat(100)
    }

    #[test]
    fn common_prefixes_end_at_a_line_break() {
        let ctx = context();
        assert_eq!(
            shared_context_len(
                &format!("{ctx}Task: review ab.rs"),
                &format!("{ctx}Task: review ac.rs")
            ),
            ctx.len()
        );
        assert_eq!(shared_context_len("abc def", "abc dxx"), 4);
        assert_eq!(shared_context_len("abc", "xyz"), 0);
    }

    #[test]
    fn siblings_register_one_prefix_and_strangers_none() {
        let prefixes = SharedPrefixes::default();
        let ctx = context();
        prefixes.register(1, &format!("{ctx}Task 1"));
        assert_eq!(
            prefixes.shared_len(1, &format!("{ctx}Task 1")),
            0,
            "one prompt shares nothing yet"
        );
        prefixes.register(1, &format!("{ctx}Task 2"));
        prefixes.register(1, &format!("{ctx}Task 3"));
        for task in 1..=3 {
            assert_eq!(
                prefixes.shared_len(1, &format!("{ctx}Task {task}")),
                ctx.len()
            );
        }
        assert_eq!(prefixes.lock()[&1].prefixes.len(), 1);
        prefixes.register(2, &format!("{ctx}Task 4"));
        assert_eq!(
            prefixes.shared_len(2, &format!("{ctx}Task 4")),
            0,
            "another group shares nothing"
        );
        prefixes.register(1, "short");
        assert_eq!(prefixes.shared_len(1, "short"), 0);
    }

    #[tokio::test]
    async fn the_first_writes_and_the_others_wait_for_it() {
        let prefixes = Arc::new(SharedPrefixes::default());
        let CacheTurn::Writer(writer) = prefixes.take_turn(1, "ctx", Duration::from_secs(60)).await
        else {
            panic!("the first to ask writes")
        };
        let waiter = {
            let prefixes = Arc::clone(&prefixes);
            tokio::spawn(async move { prefixes.take_turn(1, "ctx", Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        writer.written();
        assert!(matches!(waiter.await.unwrap(), CacheTurn::Reader));
        assert!(matches!(
            prefixes.take_turn(1, "ctx", Duration::from_secs(60)).await,
            CacheTurn::Reader
        ));
    }

    #[tokio::test]
    async fn a_failed_writer_hands_the_turn_on() {
        let prefixes = Arc::new(SharedPrefixes::default());
        let CacheTurn::Writer(writer) = prefixes.take_turn(1, "", Duration::from_secs(60)).await
        else {
            panic!()
        };
        let waiter = {
            let prefixes = Arc::clone(&prefixes);
            tokio::spawn(async move { prefixes.take_turn(1, "", Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        drop(writer);
        let CacheTurn::Writer(next) = waiter.await.unwrap() else {
            panic!("the turn passes on")
        };
        next.written();
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_stalled_writer_is_bounded() {
        let prefixes = Arc::new(SharedPrefixes::default());
        let _writer = prefixes.take_turn(1, "", Duration::from_secs(5)).await;
        assert!(matches!(
            prefixes.take_turn(1, "", Duration::from_secs(5)).await,
            CacheTurn::Reader
        ));
    }
}
