//! The `pool_*` methods: volume pools created, opened, closed and listed over the control
//! plane (issue 16), so an operator needs no `iscsi-gateway pool create` beside a running
//! gateway.
//!
//! The typed calls ([`PoolCall`]) have no I/O; [`super::Control::pool_call`] runs them.
//! Which pools are open is part of the durable configuration (`State::pools`): a pool
//! created or opened is recorded (a snapshot, synced, before the answer) and opened again
//! at restart; a closed one is forgotten. A pool is closed only when no LUN exports one of
//! its volumes and no volume of it is bound through an endpoint: the refusal names them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::rpc::{ErrorCode, RpcError};
use super::volumes::Size;
use super::{bad, volumes, Control, Model};

/// `pool_create`: a new pool of `size` (metadata included) on a new file at `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolCreate {
    pub path: String,
    pub size: Size,
}

/// `pool_open`, `pool_close`: one pool by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolPath {
    pub path: String,
}

/// One pool method with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolCall {
    Create(PoolCreate),
    Open(PoolPath),
    Close(PoolPath),
    List,
}

/// The pool methods' names.
pub const POOL_METHODS: &[&str] = &["pool_create", "pool_open", "pool_close", "pool_list"];

/// The longest pool path accepted (PATH_MAX).
const PATH_BYTES_MAX: usize = 4096;

impl PoolCall {
    /// The typed call of `method` (one of [`POOL_METHODS`]) with `params` (an object).
    pub fn parse(method: &str, params: Value) -> Result<PoolCall, RpcError> {
        fn typed<T: serde::de::DeserializeOwned>(
            method: &str,
            params: Value,
        ) -> Result<T, RpcError> {
            serde_json::from_value(params)
                .map_err(|e| RpcError::new(ErrorCode::InvalidParams, format!("{method}: {e}")))
        }
        let call = match method {
            "pool_create" => PoolCall::Create(typed(method, params)?),
            "pool_open" => PoolCall::Open(typed(method, params)?),
            "pool_close" => PoolCall::Close(typed(method, params)?),
            "pool_list" => match params {
                Value::Object(map) if map.is_empty() => PoolCall::List,
                _ => {
                    return Err(RpcError::new(
                        ErrorCode::InvalidParams,
                        "pool_list takes no parameters",
                    ))
                }
            },
            other => {
                return Err(RpcError::new(
                    ErrorCode::MethodNotFound,
                    format!("no pool method {other:?}"),
                ))
            }
        };
        if let Some(path) = call.path() {
            if path.is_empty() || path.len() > PATH_BYTES_MAX || path.contains('\0') {
                return Err(RpcError::new(
                    ErrorCode::InvalidParams,
                    format!(
                        "{method}: path: 1 to {PATH_BYTES_MAX} bytes without NUL, got {} bytes",
                        path.len()
                    ),
                ));
            }
            // A LUN spec names the pool as `pool:PATH,volume=NAME`: a comma would split it.
            if path.contains(',') {
                return Err(RpcError::new(
                    ErrorCode::InvalidParams,
                    format!("{method}: path {path:?}: a pool path cannot contain ','"),
                ));
            }
        }
        Ok(call)
    }

    /// The method name and the parameters, as a client sends them.
    pub fn to_method_params(&self) -> (&'static str, Value) {
        fn v<T: Serialize>(params: &T) -> Value {
            serde_json::to_value(params).unwrap_or(Value::Null)
        }
        match self {
            PoolCall::Create(p) => ("pool_create", v(p)),
            PoolCall::Open(p) => ("pool_open", v(p)),
            PoolCall::Close(p) => ("pool_close", v(p)),
            PoolCall::List => ("pool_list", Value::Object(Default::default())),
        }
    }

    fn path(&self) -> Option<&str> {
        match self {
            PoolCall::Create(p) => Some(&p.path),
            PoolCall::Open(p) | PoolCall::Close(p) => Some(&p.path),
            PoolCall::List => None,
        }
    }
}

/// What keeps the pool at `path` in use: its attached volumes (LUNs) and bound volumes,
/// described for a refusal.
fn users(model: &Model, path: &str) -> Vec<String> {
    let pool = volumes::canonical(path);
    let mut found = Vec::new();
    for (target, entry) in &model.targets {
        for (lun, lun_entry) in &entry.luns {
            if let Ok(crate::backend::LunSpec {
                storage:
                    crate::backend::Storage::Pool {
                        path: lun_pool,
                        volume,
                        ..
                    },
                ..
            }) = crate::backend::LunSpec::parse(&lun_entry.spec)
            {
                if volumes::canonical(&lun_pool) == pool {
                    found.push(format!(
                        "volume {volume} is attached as LUN {lun} of {target}"
                    ));
                }
            }
        }
    }
    for ((bound_pool, volume), bound) in model.bound.iter() {
        if volumes::canonical(bound_pool) == pool {
            if let Some((target, host, endpoint, _)) = bound.places.first() {
                found.push(format!(
                    "volume {volume} is bound for {host} through endpoint {endpoint} of {target}"
                ));
            }
        }
    }
    found
}

impl Control {
    /// Runs a `pool_*` call: the pool is created or opened first (the step that can fail
    /// on the disk), then the set of open pools is recorded durably before the answer; a
    /// close is recorded first and the pool closed after.
    pub(super) fn pool_call(&self, call: PoolCall) -> Result<Value, RpcError> {
        let Some(service) = self.volumes.lock().ok().and_then(|v| v.clone()) else {
            let (method, _) = call.to_method_params();
            return Err(bad(
                ErrorCode::NotAvailable,
                format!("{method}: not available: no pool configured"),
            ));
        };
        let mut inner = self.lock();
        match call {
            PoolCall::List => Ok(json!({ "pools": service.describe_pools() })),
            PoolCall::Create(p) => {
                let size = p.size.bytes("pool_create: size")?;
                let recorded = service.create_pool(&p.path, size)?;
                self.record_pools(&mut inner, "pool_create", |pools| {
                    pools.push(recorded.clone())
                })
                .map_err(|e| {
                    // Not recorded: not open either, so the state and the process agree.
                    let _ = service.close_pool(&recorded);
                    RpcError::new(
                        e.code,
                        format!("{} (the pool file {recorded} was made)", e.message),
                    )
                })?;
                Ok(json!({ "path": recorded, "size_bytes": size }))
            }
            PoolCall::Open(p) => {
                let already = inner
                    .model
                    .pools
                    .contains(&volumes::canonical(&p.path).display().to_string());
                let recorded = service.open_pool(&p.path)?;
                if !already {
                    self.record_pools(&mut inner, "pool_open", |pools| {
                        pools.push(recorded.clone())
                    })?;
                }
                Ok(json!({ "path": recorded, "already_open": already }))
            }
            PoolCall::Close(p) => {
                let key = volumes::canonical(&p.path).display().to_string();
                if !inner.model.pools.contains(&key) && !service.pools().contains(&key) {
                    return Err(bad(
                        ErrorCode::NotFound,
                        format!("pool_close: no open pool {}", p.path),
                    ));
                }
                let users = users(&inner.model, &p.path);
                if !users.is_empty() {
                    return Err(bad(
                        ErrorCode::Refused,
                        format!(
                            "pool_close: pool {key} is in use: {}; detach or unbind first",
                            users.join("; ")
                        ),
                    ));
                }
                self.record_pools(&mut inner, "pool_close", |pools| {
                    pools.retain(|p| *p != key)
                })?;
                service.close_pool(&key)?;
                Ok(json!({ "path": key }))
            }
        }
    }

    /// Changes the set of open pools and makes it durable: rare, so a whole snapshot
    /// (as portal changes are).
    fn record_pools(
        &self,
        inner: &mut super::Inner,
        method: &str,
        change: impl FnOnce(&mut Vec<String>),
    ) -> Result<(), RpcError> {
        let mut next = inner.model.clone();
        change(&mut next.pools);
        next.pools.sort();
        next.pools.dedup();
        next.generation += 1;
        if let Some(dir) = inner.state.as_mut() {
            dir.snapshot(&next.to_state()).map_err(|e| {
                bad(
                    ErrorCode::Persist,
                    format!("{method}: not done: state not written: {e}"),
                )
            })?;
        }
        inner.model = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::rpc::Call;
    use std::sync::Arc;

    #[test]
    fn pool_methods_parse_typed_and_refuse_bad_parameters() {
        let create = PoolCall::parse("pool_create", json!({"path": "/p", "size": "1G"})).unwrap();
        assert_eq!(
            create,
            PoolCall::Create(PoolCreate {
                path: "/p".into(),
                size: Size::Text("1G".into())
            })
        );
        let (method, params) = create.to_method_params();
        assert_eq!(PoolCall::parse(method, params).unwrap(), create);
        for (method, params, needle) in [
            ("pool_create", json!({"path": "/p"}), "size"),
            ("pool_open", json!({"path": "/p", "x": 1}), "unknown field"),
            ("pool_close", json!({"path": ""}), "path"),
            ("pool_open", json!({"path": "/a,b"}), "','"),
            ("pool_list", json!({"path": "/p"}), "no parameters"),
        ] {
            let e = PoolCall::parse(method, params).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidParams, "{method}");
            assert!(e.message.contains(needle), "{method}: {}", e.message);
        }
    }

    proptest::proptest! {
        /// Whatever a client sends as a pool call parses to a typed call that encodes back
        /// to the same call, or is refused as invalid parameters.
        #[test]
        fn pool_calls_round_trip_or_are_refused(
            method in proptest::sample::select(POOL_METHODS.to_vec()),
            path in "[ -~]{0,12}",
            bytes in proptest::option::of(proptest::num::u64::ANY),
            text in "[0-9A-Z]{0,4}",
            extra in proptest::bool::ANY,
        ) {
            let size = bytes.map_or(json!(text), |b| json!(b));
            let mut params = json!({"path": path, "size": size});
            if extra {
                params["other"] = json!(1);
            }
            match PoolCall::parse(method, params) {
                Ok(call) => {
                    let (name, encoded) = call.to_method_params();
                    proptest::prop_assert_eq!(name, method);
                    proptest::prop_assert_eq!(PoolCall::parse(name, encoded).unwrap(), call);
                }
                Err(e) => proptest::prop_assert_eq!(e.code, ErrorCode::InvalidParams),
            }
        }
    }

    fn pool_request(method: &str, params: Value) -> Call {
        Call::Pool(PoolCall::parse(method, params).unwrap())
    }

    #[test]
    fn pools_are_created_recorded_refused_while_in_use_and_closed() {
        let dir = std::env::temp_dir().join(format!("gateway-pools-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("state");
        let pool = dir.join("p.img").display().to_string();
        let control = Control::new(Some(super::super::StateDir::open(&state).unwrap()), 1);
        control.set_volumes(Arc::new(volumes::PoolVolumes::new()));
        control.load(&[]).unwrap();

        let made = control
            .handle(pool_request(
                "pool_create",
                json!({"path": pool, "size": "64M"}),
            ))
            .unwrap();
        let recorded = made["path"].as_str().unwrap().to_string();
        let again = control
            .handle(pool_request(
                "pool_create",
                json!({"path": pool, "size": "64M"}),
            ))
            .unwrap_err();
        assert!(
            again.message.contains("already exists"),
            "{}",
            again.message
        );
        let listed = control
            .handle(pool_request("pool_list", json!({})))
            .unwrap();
        assert_eq!(listed["pools"][0]["path"], recorded.as_str(), "{listed}");

        // A volume attached as a LUN keeps the pool open, and the refusal names it.
        control
            .handle(Call::Volume {
                method: "volume_create".into(),
                params: json!({"pool": pool, "name": "v1", "size": "8M"}),
            })
            .unwrap();
        control
            .handle(
                crate::control::rpc::parse_call(
                    "target_create",
                    json!({"name": "iqn.2026-12.test:pools"}),
                )
                .unwrap(),
            )
            .unwrap();
        control
            .handle(
                crate::control::rpc::parse_call(
                    "lun_attach",
                    json!({"target": "iqn.2026-12.test:pools", "lun": 3,
                           "backend": format!("pool:{pool},volume=v1")}),
                )
                .unwrap(),
            )
            .unwrap();
        let refused = control
            .handle(pool_request("pool_close", json!({"path": pool})))
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::Refused);
        assert!(
            refused
                .message
                .contains("volume v1 is attached as LUN 3 of iqn.2026-12.test:pools"),
            "{}",
            refused.message
        );
        drop(control);

        // A restart opens the recorded pool again; after the detach it closes, and the
        // next restart has it no more.
        let control = Control::new(Some(super::super::StateDir::open(&state).unwrap()), 1);
        control.set_volumes(Arc::new(volumes::PoolVolumes::new()));
        control.load(&[]).unwrap();
        let listed = control
            .handle(pool_request("pool_list", json!({})))
            .unwrap();
        assert_eq!(listed["pools"][0]["volumes"], 1, "{listed}");
        control
            .handle(
                crate::control::rpc::parse_call(
                    "lun_detach",
                    json!({"target": "iqn.2026-12.test:pools", "lun": 3}),
                )
                .unwrap(),
            )
            .unwrap();
        control
            .handle(pool_request("pool_close", json!({"path": pool})))
            .unwrap();
        let missing = control
            .handle(pool_request("pool_close", json!({"path": pool})))
            .unwrap_err();
        assert_eq!(missing.code, ErrorCode::NotFound, "{}", missing.message);
        drop(control);

        let control = Control::new(Some(super::super::StateDir::open(&state).unwrap()), 1);
        control.set_volumes(Arc::new(volumes::PoolVolumes::new()));
        control.load(&[]).unwrap();
        let listed = control
            .handle(pool_request("pool_list", json!({})))
            .unwrap();
        assert_eq!(listed["pools"], json!([]), "{listed}");
        // The file stays: opening it again brings its volume back.
        let opened = control
            .handle(pool_request("pool_open", json!({"path": pool})))
            .unwrap();
        assert_eq!(opened["already_open"], false);
        let listed = control
            .handle(pool_request("pool_list", json!({})))
            .unwrap();
        assert_eq!(listed["pools"][0]["volumes"], 1, "{listed}");
        drop(control);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
