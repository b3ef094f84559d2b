//! A circuit breaker for Redis: every call is bounded by a timeout, and after a failure calls fail at once (the cache
//! answers a miss, a publish is skipped) instead of each waiting on a dead or hung server, until a single probe call
//! — let through once the probe interval has passed — succeeds. Reads and writes stay correct while it is open:
//! the cache is only ever an optimisation (consent is decided from the database), and subscribers resubscribe when
//! Redis returns (`pubsub::RedisPubSub`).
use std::{
    fmt::Display,
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// Why a call did not run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError {
    #[error("{0} is unavailable (circuit open after a recent failure)")]
    Open(&'static str),
    #[error("{0} did not answer within {1:?}")]
    TimedOut(&'static str, Duration),
    #[error("{0}: {1}")]
    Failed(&'static str, String),
}

pub struct Breaker {
    name: &'static str,
    timeout: Duration,
    probe_every: Duration,
    epoch: Instant,
    /// Milliseconds since `epoch` until which calls fail at once; 0: closed.
    open_until: AtomicU64,
}

impl Breaker {
    pub fn new(name: &'static str, timeout: Duration, probe_every: Duration) -> Self {
        Breaker { name, timeout, probe_every, epoch: Instant::now(), open_until: AtomicU64::new(0) }
    }

    fn now_ms(&self) -> u64 {
        // Never 0, so 0 can mean closed.
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether calls fail at once now.
    pub fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) > self.now_ms()
    }

    /// Runs `call` unless the circuit is open; a failure or a timeout opens it for the probe interval. Once the
    /// interval has passed, one caller (the probe) runs while the others still fail at once.
    pub async fn call<T, E: Display>(&self, call: impl Future<Output = Result<T, E>>) -> Result<T, BreakerError> {
        let now = self.now_ms();
        let until = self.open_until.load(Ordering::Acquire);
        if until != 0 {
            if until > now {
                metrics::counter!("kontakt_breaker_rejected_total", "dependency" => self.name).increment(1);
                return Err(BreakerError::Open(self.name));
            }
            // Half open: the caller that moves the deadline on is the probe; the others fail at once.
            let next = now + self.probe_every.as_millis() as u64;
            if self.open_until.compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire).is_err() {
                return Err(BreakerError::Open(self.name));
            }
        }
        let outcome = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(BreakerError::Failed(self.name, err.to_string())),
            Err(_) => Err(BreakerError::TimedOut(self.name, self.timeout)),
        };
        match &outcome {
            Ok(_) => {
                if self.open_until.swap(0, Ordering::AcqRel) != 0 {
                    tracing::info!(dependency = self.name, "circuit closed: the dependency answers again");
                    metrics::gauge!("kontakt_breaker_open", "dependency" => self.name).set(0.0);
                }
            }
            Err(err) => {
                let next = self.now_ms() + self.probe_every.as_millis() as u64;
                if self.open_until.swap(next, Ordering::AcqRel) == 0 {
                    tracing::warn!(dependency = self.name, error = %err, "circuit open: failing fast until a probe succeeds");
                    metrics::gauge!("kontakt_breaker_open", "dependency" => self.name).set(1.0);
                }
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn failing() -> Result<(), String> {
        Err("refused".to_owned())
    }

    #[tokio::test]
    async fn a_failure_opens_the_circuit_until_a_probe_succeeds() {
        let breaker = Breaker::new("redis", Duration::from_millis(50), Duration::from_millis(100));
        assert!(breaker.call(async { Ok::<_, String>(1) }).await.is_ok());
        assert!(matches!(breaker.call(failing()).await, Err(BreakerError::Failed(..))));
        assert!(breaker.is_open());
        // Open: the call is not even started.
        let started = std::sync::atomic::AtomicBool::new(false);
        let result = breaker
            .call(async {
                started.store(true, Ordering::SeqCst);
                Ok::<_, String>(2)
            })
            .await;
        assert!(matches!(result, Err(BreakerError::Open(_))));
        assert!(!started.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(120)).await;
        // The probe succeeds and closes it.
        assert_eq!(breaker.call(async { Ok::<_, String>(3) }).await.ok(), Some(3));
        assert!(!breaker.is_open());
    }

    #[tokio::test]
    async fn a_hung_call_times_out_and_opens_the_circuit() {
        let breaker = Breaker::new("redis", Duration::from_millis(30), Duration::from_secs(10));
        let started = Instant::now();
        let hung = breaker.call(std::future::pending::<Result<(), String>>()).await;
        assert!(matches!(hung, Err(BreakerError::TimedOut(..))));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(matches!(breaker.call(async { Ok::<_, String>(()) }).await, Err(BreakerError::Open(_))));
    }
}
