//! Open event streams (`GET /v1/events/stream`) per user token and per tenant on this
//! instance: a stream holds a [`StreamSlot`] from its start until it ends, and a caller past
//! `events.max_streams_per_user` or a tenant past `events.max_streams_per_tenant` is answered
//! 429 `stream_limit_reached` instead of one more long-lived connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::auth::{Principal, TenantScope};
use crate::domain::ErrorCode;
use crate::error::Error;

/// The open streams of this instance, by tenant and by `(tenant, user)`.
#[derive(Debug)]
pub struct StreamSlots {
    per_user: usize,
    per_tenant: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream's place; given back when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    keys: Vec<String>,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

impl StreamSlots {
    /// At most `per_user` streams per user token and `per_tenant` per tenant.
    pub fn new(per_user: usize, per_tenant: usize) -> Self {
        StreamSlots {
            per_user,
            per_tenant,
            held: Arc::default(),
        }
    }

    /// A place for one more stream of `scope`'s caller. Errors: 429 `stream_limit_reached`
    /// when the caller (a user) or its tenant holds as many as allowed.
    pub fn acquire(&self, scope: &TenantScope) -> Result<StreamSlot, Error> {
        let tenant = scope.tenant().as_str();
        let mut keys = vec![format!("t\u{0}{tenant}")];
        if let Principal::User(u) = scope.principal() {
            keys.push(format!("u\u{0}{tenant}\u{0}{}", u.as_str()));
        }
        let mut held = self
            .held
            .lock()
            .map_err(|_| Error::Internal(anyhow::anyhow!("the stream slots' lock is poisoned")))?;
        let full = keys.iter().enumerate().any(|(i, k)| {
            let limit = if i == 0 {
                self.per_tenant
            } else {
                self.per_user
            };
            held.get(k).copied().unwrap_or(0) >= limit
        });
        if full {
            return Err(Error::client(
                ErrorCode::StreamLimitReached,
                "too many event streams are open for this caller or tenant; close one first",
            ));
        }
        for k in &keys {
            *held.entry(k.clone()).or_insert(0) += 1;
        }
        Ok(StreamSlot {
            keys,
            held: self.held.clone(),
        })
    }

    /// Streams open on this instance.
    pub fn open(&self) -> usize {
        let Ok(held) = self.held.lock() else {
            return 0;
        };
        held.iter()
            .filter(|(k, _)| k.starts_with('t'))
            .map(|(_, n)| *n)
            .sum()
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        for k in &self.keys {
            if let Some(n) = held.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    held.remove(k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ExternalUserId, TenantId};

    fn scope(tenant: &str, user: Option<&str>) -> TenantScope {
        let principal = match user {
            Some(u) => Principal::User(ExternalUserId::parse(u).unwrap()),
            None => Principal::Server,
        };
        TenantScope::for_test(TenantId::parse(tenant).unwrap(), principal)
    }

    #[test]
    fn a_user_and_a_tenant_hold_at_most_their_limits_and_get_them_back_on_drop() {
        let slots = StreamSlots::new(2, 3);
        let a1 = slots.acquire(&scope("acme", Some("ann"))).unwrap();
        let _a2 = slots.acquire(&scope("acme", Some("ann"))).unwrap();
        let third = slots.acquire(&scope("acme", Some("ann"))).unwrap_err();
        assert_eq!(third.code(), ErrorCode::StreamLimitReached);
        // Another user of the tenant: the tenant's third.
        let _b = slots.acquire(&scope("acme", Some("bob"))).unwrap();
        assert_eq!(
            slots.acquire(&scope("acme", None)).unwrap_err().code(),
            ErrorCode::StreamLimitReached
        );
        // Another tenant is not affected.
        let _other = slots.acquire(&scope("other", Some("ann"))).unwrap();
        assert_eq!(slots.open(), 4);
        drop(a1);
        assert_eq!(slots.open(), 3);
        slots.acquire(&scope("acme", Some("ann"))).unwrap();
    }
}
