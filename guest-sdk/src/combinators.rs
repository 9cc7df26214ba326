//! `parallel` and `pipeline`: fan-out combinators over any futures.

use crate::error::Error;
use crate::executor::JoinAll;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

/// The most futures [`parallel`] and items [`pipeline`] accept in one call.
///
/// Longer lists are refused with an error rather than flooding the host's queue; split them
/// into chunks.
pub const MAX_FANOUT: usize = 4096;

fn check_fanout(what: &str, len: usize) -> Result<(), Error> {
    if len > MAX_FANOUT {
        return Err(Error::new(format!(
            "{what}: {len} items exceed the limit of {MAX_FANOUT} (MAX_FANOUT); split the list into chunks"
        )));
    }
    Ok(())
}

/// Runs futures concurrently and returns their outputs in the order of the input.
///
/// Agent calls among them all start on the first poll, so the host sees the whole batch at once
/// (and runs it under the run's concurrency cap).
///
/// ```no_run
/// # async fn example() -> Result<(), guest_sdk::Error> {
/// use guest_sdk::{AgentOptions, agent, parallel};
/// let files = ["a.rs", "b.rs"];
/// let outcomes = parallel(files.map(|f| agent(format!("Review {f}"), AgentOptions::new()))).await?;
/// for outcome in outcomes {
///     match outcome {
///         Ok(output) => guest_sdk::log(&output.text),
///         Err(error) => guest_sdk::log(&format!("skipped: {error}")),
///     }
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// Fails without polling anything when there are more than [`MAX_FANOUT`] futures.
pub async fn parallel<I>(futures: I) -> Result<Vec<<I::Item as Future>::Output>, Error>
where
    I: IntoIterator,
    I::Item: Future,
{
    let futures: Vec<I::Item> = futures.into_iter().collect();
    check_fanout("parallel", futures.len())?;
    Ok(JoinAll::new(futures).await)
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;
type Chain<'a, I, T> = Rc<dyn Fn(I, usize) -> BoxFuture<'a, Result<T, Error>> + 'a>;

/// Starts a pipeline over `items`; add stages with [`Pipeline::stage`] and run it with
/// [`Pipeline::run`].
///
/// Each item flows through the stages on its own: there is no barrier between stages, so one
/// item may be in stage 2 while another is still in stage 1. All items start at once.
///
/// ```no_run
/// # async fn example() -> Result<(), guest_sdk::Error> {
/// use guest_sdk::{AgentOptions, agent, pipeline, tools};
/// let files = tools::glob("src/**/*.rs")?;
/// let reviews = pipeline(files)
///     // The first stage receives the item itself as `prev`.
///     .stage(|path: String, _item, _index| async move { Ok(tools::read(&path)?) })
///     .stage(|source, path, _index| async move {
///         let prompt = format!("Review {path}:\n{source}");
///         Ok(agent(prompt, AgentOptions::new()).await?.text)
///     })
///     .run()
///     .await?;
/// // `None` where a stage failed for that item.
/// # let _ = reviews; Ok(()) }
/// ```
pub fn pipeline<'a, I>(items: impl IntoIterator<Item = I>) -> Pipeline<'a, I, I>
where
    I: Clone + 'a,
{
    Pipeline {
        items: items.into_iter().collect(),
        chain: Rc::new(|item, _index| Box::pin(std::future::ready(Ok(item)))),
    }
}

/// A pipeline of stages over a list of items of type `I`, whose last stage yields `T`. Created
/// by [`pipeline`].
#[must_use = "a pipeline does nothing until it is run and awaited"]
pub struct Pipeline<'a, I, T> {
    items: Vec<I>,
    /// Runs one item through every stage added so far.
    chain: Chain<'a, I, T>,
}

impl<'a, I, T> Pipeline<'a, I, T>
where
    I: Clone + 'a,
    T: 'a,
{
    /// Adds a stage: `stage(prev, item, index)` receives the previous stage's output (the item
    /// itself for the first stage), a clone of the item and the item's index in the list.
    ///
    /// A stage returning `Err` ends that item's journey: its remaining stages are skipped and
    /// its result is `None` (see [`Pipeline::run_results`] for the error).
    pub fn stage<U, F, Fut>(self, stage: F) -> Pipeline<'a, I, U>
    where
        F: Fn(T, I, usize) -> Fut + 'a,
        Fut: Future<Output = Result<U, Error>> + 'a,
        U: 'a,
    {
        let previous = self.chain;
        let stage = Rc::new(stage);
        Pipeline {
            items: self.items,
            chain: Rc::new(move |item: I, index| {
                let previous = previous.clone();
                let stage = stage.clone();
                Box::pin(async move {
                    let prev = previous(item.clone(), index).await?;
                    stage(prev, item, index).await
                })
            }),
        }
    }

    /// Runs every item through the stages; resolves to each item's last output, in item order,
    /// or `None` for items a stage failed for.
    ///
    /// # Errors
    ///
    /// Fails without running anything when there are more than [`MAX_FANOUT`] items.
    pub async fn run(self) -> Result<Vec<Option<T>>, Error> {
        Ok(self
            .run_results()
            .await?
            .into_iter()
            .map(Result::ok)
            .collect())
    }

    /// Like [`Pipeline::run`], but keeps the error that stopped each failed item.
    ///
    /// # Errors
    ///
    /// Fails without running anything when there are more than [`MAX_FANOUT`] items.
    pub async fn run_results(self) -> Result<Vec<Result<T, Error>>, Error> {
        check_fanout("pipeline", self.items.len())?;
        let chain = self.chain;
        let runs: Vec<_> = self
            .items
            .into_iter()
            .enumerate()
            .map(|(index, item)| chain(item, index))
            .collect();
        Ok(JoinAll::new(runs).await)
    }
}
