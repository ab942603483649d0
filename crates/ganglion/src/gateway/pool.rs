//! The gateway's side of the network: it is a robot. It holds its own key and budget, and
//! opens sessions on demand, one per (model, deadline, redundancy), placed by the market from
//! its own view of the control plane, each with a warm standby and spares kept fresh from the
//! view, exactly as `ganglion robot` does. A session is opened by the first request that needs
//! it; concurrent first requests wait for the same opening.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ganglion_client::{Answered, RequestError, Session, SessionConfig};
use ganglion_control::View;
use ganglion_net::Endpoint;
use ganglion_runtime::zoo::Bundled;
use ganglion_settle::Domain;
use ganglion_types::{AcceleratorClass, Coordinates, MicroTokens, ModelHash, NodeKey, Tensor};
use tokio::sync::OnceCell;

use super::error::ApiError;
use crate::control::{self, Want};

/// Most sessions one pool holds (distinct model, deadline and redundancy triples).
pub const SESSIONS_MAX: usize = 64;

/// How long the first request for a model waits for the view to offer a placement (a gateway
/// that just started hears the providers' offers within a second or two).
const DISCOVER: Duration = Duration::from_secs(3);

/// What a model is to the gateway: bundled models are recognised by the hash of their bytes
/// (never by the alias a provider declares), and only they get decoded outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Faces,
    Hand,
    Embeddings,
    /// Any other model: tensors in, tensors out.
    Tensors,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Faces => "face-detection",
            Self::Hand => "hand-landmarks",
            Self::Embeddings => "text-embedding",
            Self::Tensors => "tensors",
        }
    }
}

/// A model the network serves, as the gateway names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    pub hash: ModelHash,
    pub alias: String,
    pub kind: Kind,
    /// Providers in the view that list it.
    pub providers: usize,
}

/// The bundled models' hashes (computed once: MiniLM is 23 MB).
#[derive(Debug, Clone)]
pub struct Bundles {
    known: Vec<(Bundled, ModelHash)>,
}

impl Bundles {
    pub fn new() -> Self {
        Self {
            known: Bundled::ALL
                .into_iter()
                .map(|b| (b, ModelHash::of(b.bytes())))
                .collect(),
        }
    }

    pub fn kind(&self, hash: &ModelHash) -> Kind {
        match self.known.iter().find(|(_, h)| h == hash).map(|(b, _)| *b) {
            Some(Bundled::BlazeFace) => Kind::Faces,
            Some(Bundled::HandLandmark) => Kind::Hand,
            Some(Bundled::MiniLm) => Kind::Embeddings,
            None => Kind::Tensors,
        }
    }

    /// The bundled alias of a hash (what providers declare is not trusted for these).
    pub fn alias_of(&self, hash: &ModelHash) -> Option<&'static str> {
        self.known
            .iter()
            .find(|(_, h)| h == hash)
            .map(|(b, _)| b.alias())
    }

    fn hash_of(&self, alias: &str) -> Option<ModelHash> {
        self.known
            .iter()
            .find(|(b, _)| b.alias() == alias)
            .map(|(_, h)| *h)
    }
}

impl Default for Bundles {
    fn default() -> Self {
        Self::new()
    }
}

/// The models the view's providers list, one entry per hash, bundled aliases first.
pub fn served(view: &View, bundles: &Bundles) -> Vec<ModelRef> {
    let mut by_hash: HashMap<ModelHash, ModelRef> = HashMap::new();
    for (_, known) in view.providers() {
        for listing in &known.models {
            let entry = by_hash.entry(listing.model).or_insert_with(|| ModelRef {
                hash: listing.model,
                alias: bundles
                    .alias_of(&listing.model)
                    .map_or_else(|| listing.alias.clone(), str::to_owned),
                kind: bundles.kind(&listing.model),
                providers: 0,
            });
            entry.providers += 1;
        }
    }
    let mut models: Vec<ModelRef> = by_hash.into_values().collect();
    models.sort_by(|a, b| {
        (a.kind == Kind::Tensors, &a.alias, a.hash.to_string()).cmp(&(
            b.kind == Kind::Tensors,
            &b.alias,
            b.hash.to_string(),
        ))
    });
    models
}

/// Finds the model a request names: a bundled alias, a hash in hex, or an alias a provider
/// lists (when it names one model only). It must be served by a provider in the view.
pub fn resolve(view: &View, bundles: &Bundles, name: &str) -> Result<ModelRef, ApiError> {
    let models = served(view, bundles);
    let names = || models.iter().map(|m| m.alias.clone()).collect::<Vec<_>>();
    let wanted = bundles
        .hash_of(name)
        .or_else(|| name.parse::<ModelHash>().ok());
    let found = match wanted {
        Some(hash) => models.iter().find(|m| m.hash == hash),
        None => {
            let mut same = models.iter().filter(|m| m.alias == name);
            match (same.next(), same.next()) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::invalid(
                        "ambiguous_model",
                        format!("several models are listed as {name:?}: name one by its hash"),
                    )
                    .param("model"))
                }
                (one, _) => one,
            }
        }
    };
    found
        .cloned()
        .ok_or_else(|| ApiError::model_not_found(name, &names()))
}

/// Which session a request goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub model: ModelHash,
    pub deadline_ms: u64,
    pub redundancy: usize,
}

/// A session the pool opened.
#[derive(Debug)]
pub struct Opened {
    pub session: Arc<Session>,
    pub alias: String,
    pub price: MicroTokens,
    /// The session's budget now (it grows by renewals while the gateway's budget allows);
    /// held across a renewal, so one at a time.
    pub budget: tokio::sync::Mutex<MicroTokens>,
    /// Providers each request goes to.
    pub session_k: usize,
    pub opened: Instant,
    keeper: tokio::task::JoinHandle<()>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// The sessions of one robot identity at one place.
#[derive(Debug)]
pub struct Pool {
    key: Arc<NodeKey>,
    endpoint: Endpoint,
    view: Arc<Mutex<View>>,
    pub at: Coordinates,
    domain: Domain,
    heartbeat: Duration,
    max_price: MicroTokens,
    /// What one session may spend.
    session_budget: MicroTokens,
    /// What all sessions together may be given; each opening sets its budget aside.
    budget: MicroTokens,
    allocated: Mutex<MicroTokens>,
    sessions: Mutex<HashMap<SessionKey, Arc<OnceCell<Arc<Opened>>>>>,
}

/// How a pool pays and places.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    pub at: Coordinates,
    pub domain: Domain,
    pub heartbeat: Duration,
    pub max_price: MicroTokens,
    pub session_budget: MicroTokens,
    pub budget: MicroTokens,
}

/// A request's answer and the session that carried it.
#[derive(Debug)]
pub struct Done {
    pub answered: Answered,
    /// The session's active providers when it answered (where the copies went).
    pub active: Vec<ganglion_types::NodeId>,
}

impl Pool {
    pub fn new(
        key: Arc<NodeKey>,
        endpoint: Endpoint,
        view: Arc<Mutex<View>>,
        config: PoolConfig,
    ) -> Self {
        Self {
            key,
            endpoint,
            view,
            at: config.at,
            domain: config.domain,
            heartbeat: config.heartbeat,
            max_price: config.max_price,
            session_budget: config.session_budget,
            budget: config.budget,
            allocated: Mutex::new(MicroTokens::ZERO),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    pub fn id(&self) -> ganglion_types::NodeId {
        self.key.id()
    }

    pub fn view(&self) -> &Arc<Mutex<View>> {
        &self.view
    }

    /// Budget: the whole, and what the sessions opened so far have set aside.
    pub fn budget(&self) -> (MicroTokens, MicroTokens) {
        (
            self.budget,
            self.allocated.lock().map_or(MicroTokens::ZERO, |a| *a),
        )
    }

    /// The sessions open now.
    pub fn sessions(&self) -> Vec<(SessionKey, Arc<Opened>)> {
        let cells: Vec<_> = self
            .sessions
            .lock()
            .map(|s| s.iter().map(|(k, c)| (*k, Arc::clone(c))).collect())
            .unwrap_or_default();
        cells
            .into_iter()
            .filter_map(|(k, c)| c.get().map(|o| (k, Arc::clone(o))))
            .collect()
    }

    /// Sends `inputs` through the session for `key` (opened first if needed).
    pub async fn infer(
        &self,
        key: SessionKey,
        alias: &str,
        inputs: Vec<Tensor>,
    ) -> Result<Done, ApiError> {
        let opened = self.session(key, alias).await?;
        self.top_up(&opened).await;
        let answered = opened
            .session
            .request(inputs)
            .await
            .map_err(|e| request_error(&e))?;
        Ok(Done {
            answered,
            active: opened.session.active(),
        })
    }

    /// Renews a session running low (a quarter of a session budget left, or less than a
    /// request's k answers) with one more session budget from the gateway's, while the
    /// gateway's budget allows. One renewal at a time per session.
    async fn top_up(&self, opened: &Opened) {
        let needed = opened
            .price
            .checked_mul(opened.session_k as u64)
            .unwrap_or(MicroTokens(u64::MAX))
            .max(MicroTokens(self.session_budget.0 / 4));
        let mut budget = opened.budget.lock().await;
        let left = budget
            .checked_sub(opened.session.spent())
            .unwrap_or(MicroTokens::ZERO);
        if left >= needed {
            return;
        }
        let Some(raised) = budget.checked_add(self.session_budget) else {
            return;
        };
        if !self.set_aside() {
            return;
        }
        match opened.session.renew(raised).await {
            Ok(_) => *budget = raised,
            Err(e) => tracing::warn!(error = %e, "session renewal failed"),
        }
    }

    /// Sets one session budget aside from the gateway's; false when the budget is spent.
    fn set_aside(&self) -> bool {
        let Ok(mut allocated) = self.allocated.lock() else {
            return false;
        };
        match allocated
            .checked_add(self.session_budget)
            .filter(|a| *a <= self.budget)
        {
            Some(after) => {
                *allocated = after;
                true
            }
            None => false,
        }
    }

    async fn session(&self, key: SessionKey, alias: &str) -> Result<Arc<Opened>, ApiError> {
        let cell = {
            let mut sessions = self
                .sessions
                .lock()
                .map_err(|_| ApiError::internal("session table poisoned"))?;
            if !sessions.contains_key(&key) && sessions.len() >= SESSIONS_MAX {
                return Err(ApiError::too_many(format!(
                    "the gateway holds {SESSIONS_MAX} sessions (one per model, deadline and redundancy asked for): reuse a deadline and redundancy already in use"
                )));
            }
            Arc::clone(sessions.entry(key).or_default())
        };
        // A failed opening leaves the cell empty and in the table: the next request for the
        // key tries again on the same cell, so two sessions are never opened for one key.
        cell.get_or_try_init(|| self.open(key, alias))
            .await
            .map(Arc::clone)
    }

    async fn open(&self, key: SessionKey, alias: &str) -> Result<Arc<Opened>, ApiError> {
        let deadline_us = u32::try_from(key.deadline_ms.saturating_mul(1000)).unwrap_or(u32::MAX);
        let want = Want {
            robot: self.at,
            model: key.model,
            deadline_us,
            k: key.redundancy,
            max_price: self.max_price,
            accelerator: AcceleratorClass::Cpu,
        };
        let placed = {
            // `control::place` polls a node; the pool holds only the view, so poll it here.
            let started = Instant::now();
            loop {
                let placed = crate::control::place_in(&self.view, &want);
                // A view that already lists the model has given its answer (a deadline out of
                // reach, prices too high): wait only while the view may still be filling.
                let listed = self.view.lock().is_ok_and(|v| {
                    v.providers()
                        .any(|(_, k)| k.models.iter().any(|l| l.model == key.model))
                });
                match placed {
                    Ok(p) => break p,
                    Err(e) if listed || started.elapsed() >= DISCOVER => {
                        return Err(ApiError::unavailable(
                            "no_placement",
                            format!(
                                "no placement for {alias} within {} ms at redundancy {}: {e}",
                                key.deadline_ms, key.redundancy
                            ),
                        ))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        };
        let price = MicroTokens(control::offer_price(&placed));
        if !self.set_aside() {
            return Err(ApiError::budget(format!(
                "the gateway's budget of {} is set aside for the sessions already open ({} at a time)",
                self.budget, self.session_budget
            )));
        }
        let refund = |pool: &Self| {
            if let Ok(mut allocated) = pool.allocated.lock() {
                *allocated = allocated
                    .checked_sub(pool.session_budget)
                    .unwrap_or(MicroTokens::ZERO);
            }
        };
        let payment = match crate::pay::payment(&self.key, self.domain, price, self.session_budget)
        {
            Ok(p) => p,
            Err(e) => {
                refund(self);
                return Err(ApiError::internal(format!("payment: {e:#}")));
            }
        };
        let config = SessionConfig {
            model: key.model,
            redundancy: key.redundancy,
            deadline: Duration::from_millis(key.deadline_ms),
            hedging: ganglion_client::Hedging::AllAtOnce,
            pay: Some(payment),
        };
        let session = match Session::open(
            Arc::clone(&self.key),
            self.endpoint.clone(),
            config,
            control::addrs(&placed),
        )
        .await
        {
            Ok(s) => Arc::new(s),
            Err(e) => {
                refund(self);
                return Err(ApiError::unavailable("no_provider", e.to_string()));
            }
        };
        let keeper = control::keep_spares(
            Arc::clone(&self.view),
            Arc::downgrade(&session),
            Want {
                max_price: price,
                ..want
            },
            self.heartbeat,
        );
        Ok(Arc::new(Opened {
            session,
            alias: alias.to_owned(),
            price,
            budget: tokio::sync::Mutex::new(self.session_budget),
            session_k: key.redundancy,
            opened: Instant::now(),
            keeper,
        }))
    }

    /// Makes sure every provider paid holds its latest voucher (graceful shutdown); the
    /// sessions stay listed, so that what they spent can still be read.
    pub async fn settle(&self) {
        for (_, opened) in self.sessions() {
            opened.session.settle(Duration::from_secs(1)).await;
        }
    }
}

/// A request error as the caller sees it.
fn request_error(e: &RequestError) -> ApiError {
    match e {
        RequestError::DeadlineMissed(_) => ApiError::deadline(e.to_string()),
        RequestError::BadInput(_) => {
            ApiError::invalid("invalid_input", e.to_string()).param("inputs")
        }
        RequestError::Budget { .. } => ApiError::budget(e.to_string()),
        RequestError::Busy(_) => ApiError::unavailable("providers_busy", e.to_string()),
        _ => ApiError::unavailable("no_provider", e.to_string()),
    }
}
