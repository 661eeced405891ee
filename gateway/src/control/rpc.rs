//! The control plane's wire format: JSON-RPC 2.0 (<https://www.jsonrpc.org/specification>),
//! one request object per line on a Unix socket, one response line per request that has an
//! `id` (a request without one is a notification: it runs, and gets no answer).
//!
//! Every method has its own parameter struct (`deny_unknown_fields`), so a misspelt or
//! missing field is refused with a message that names it. Errors carry the JSON-RPC codes
//! (-32700 parse error, -32600 invalid request, -32601 method not found, -32602 invalid
//! params, -32603 internal error) and, for requests that were understood but cannot be
//! done, the codes of [`ErrorCode`] from -32000 down. No I/O here: the server and the
//! client (`iscsi-ctl gateway`) both use these types, and the fuzz target drives
//! [`parse_request`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest request line accepted, in bytes (the newline excluded). A target with its
/// ACL and CHAP, or a LUN spec with a path, is well under 4 KiB; the margin is for long
/// initiator lists.
pub const MAX_REQUEST_BYTES: usize = 64 << 10;

/// The longest response line a client reads: `target_list` of many targets is the big one.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// The JSON-RPC error codes this server answers with.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// -32700: not JSON.
    Parse,
    /// -32600: JSON, but not a JSON-RPC 2.0 request (or too long).
    InvalidRequest,
    /// -32601
    MethodNotFound,
    /// -32602: a parameter missing, misspelt, of the wrong type or out of range.
    InvalidParams,
    /// -32603
    Internal,
    /// -32001: the target, LUN or session named does not exist.
    NotFound,
    /// -32002: the target or LUN number is taken.
    AlreadyExists,
    /// -32003: the backend could not be opened (file missing, no memory, locked...).
    Backend,
    /// -32004: the change could not be made durable; nothing was changed.
    Persist,
    /// -32005: the feature is not configured on this gateway (volumes without a pool).
    NotAvailable,
    /// -32006: the change is refused as it stands (a target that still has LUNs...).
    Refused,
}

impl ErrorCode {
    pub fn code(self) -> i64 {
        match self {
            ErrorCode::Parse => -32700,
            ErrorCode::InvalidRequest => -32600,
            ErrorCode::MethodNotFound => -32601,
            ErrorCode::InvalidParams => -32602,
            ErrorCode::Internal => -32603,
            ErrorCode::NotFound => -32001,
            ErrorCode::AlreadyExists => -32002,
            ErrorCode::Backend => -32003,
            ErrorCode::Persist => -32004,
            ErrorCode::NotAvailable => -32005,
            ErrorCode::Refused => -32006,
        }
    }
}

/// A JSON-RPC error: its code and a message that names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (JSON-RPC error {})", code.code())]
pub struct RpcError {
    pub code: ErrorCode,
    pub message: String,
}

impl RpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }
}

/// A request's id: a number or a string (JSON-RPC also allows null, which we answer as
/// null).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Number(i64),
    Text(String),
    Null,
}

/// CHAP credentials as the control plane takes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chap {
    pub user: String,
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetCreate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// InitiatorNames allowed to see and log in; absent allows all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_initiators: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap: Option<Chap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual_chap: Option<Chap>,
    /// LUNs attached with the target, in the same durable commit (as SPDK's
    /// `iscsi_create_target_node` takes its LUN list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub luns: Vec<NewLun>,
}

/// One LUN of `target_create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLun {
    pub lun: u64,
    pub backend: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetName {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSetAcl {
    pub name: String,
    /// `null` allows every initiator.
    pub allowed_initiators: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSetChap {
    pub name: String,
    /// `null` turns CHAP off (and mutual CHAP with it).
    pub chap: Option<Chap>,
    #[serde(default)]
    pub mutual_chap: Option<Chap>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LunAttach {
    pub target: String,
    pub lun: u64,
    /// A LUN spec as `--lun` takes it (`ram:1G`, `file:/path:10G,serial=..`).
    pub backend: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LunRef {
    pub target: String,
    pub lun: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// `portal_add`, `portal_remove`: an address `IP:PORT` (`[IPv6]:PORT`); port 0 on add
/// picks a free one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalAddress {
    pub address: std::net::SocketAddr,
}

/// `lun_stats`: the LUNs of one target or of all; with `interval_ms`, the figures of that
/// interval (the gateway measures twice), else those since each LUN was attached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LunStatsParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
}

/// The longest `interval_ms` of `lun_stats`.
pub const MAX_STATS_INTERVAL_MS: u64 = 60_000;

/// Which sessions `session_drop` closes: those matching every field given (at least one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<String>,
    /// 12 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isid: Option<String>,
    /// The portal the sessions came in on (a port lost: its hosts go elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<std::net::SocketAddr>,
}

/// `bind`: volumes of a pool bound for a host through a protocol endpoint (a batch in one
/// durable commit). `secondaries`, when given, are the IDs to use (one per volume); the
/// control plane fills them in the journal so a replay binds the same IDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    pub target: String,
    /// The endpoint's LUN.
    pub endpoint: u64,
    /// The host's iSCSI initiator name.
    pub host: String,
    /// The pool's path.
    pub pool: String,
    pub volumes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondaries: Option<Vec<u64>>,
}

/// `unbind`: the bindings of these volumes for the host (through `endpoint` only, when
/// given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unbind {
    pub target: String,
    pub host: String,
    pub pool: String,
    pub volumes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<u64>,
}

/// `binding_list`: every binding, or those of a target and/or host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A method and its typed parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    TargetCreate(TargetCreate),
    TargetDelete(TargetName),
    TargetList,
    TargetSetAcl(TargetSetAcl),
    TargetSetChap(TargetSetChap),
    LunAttach(LunAttach),
    LunDetach(LunRef),
    LunStats(LunStatsParams),
    PortalList,
    PortalAdd(PortalAddress),
    PortalRemove(PortalAddress),
    SessionList(TargetFilter),
    SessionDrop(SessionFilter),
    Bind(Bind),
    Unbind(Unbind),
    BindingList(BindingFilter),
    /// `volume_*`: handled by the volume pool when one is configured; the parameters
    /// are the pool's to check.
    Volume {
        method: String,
        params: Value,
    },
    /// `pool_*`: volume pools created, opened, closed, listed (`pools`).
    Pool(super::pools::PoolCall),
    /// Portals, the virtual portal, drain and rebalance, ALUA (`array_rpc`).
    Array(super::array_rpc::ArrayCall),
    /// `migrate_*` and `changes_*`: migration and changed-block tracking of a LUN
    /// (`control::migration` checks the parameters).
    Migration {
        method: String,
        params: Value,
    },
}

/// Every method name, for "method not found" and `--help`.
pub const METHODS: &[&str] = &[
    "target_create",
    "target_delete",
    "target_list",
    "target_set_acl",
    "target_set_chap",
    "lun_attach",
    "lun_detach",
    "lun_stats",
    "portal_list",
    "portal_add",
    "portal_remove",
    "session_list",
    "session_drop",
    "bind",
    "unbind",
    "binding_list",
    "volume_*",
    "pool_create",
    "pool_open",
    "pool_close",
    "pool_list",
    "portal_set",
    "portal_drain",
    "portal_resume",
    "portal_rebalance",
    "virtual_portal_add",
    "redirect_set",
    "alua_list",
    "alua_set",
    "migrate_start",
    "migrate_status",
    "migrate_complete",
    "migrate_commit",
    "migrate_cancel",
    "migrate_rollback",
    "changes_track",
    "changes_query",
];

impl Call {
    /// The method name and the parameters, as a client sends them.
    pub fn to_method_params(&self) -> (String, Value) {
        fn v<T: Serialize>(params: &T) -> Value {
            serde_json::to_value(params).unwrap_or(Value::Null)
        }
        let (method, params) = match self {
            Call::TargetCreate(p) => ("target_create", v(p)),
            Call::TargetDelete(p) => ("target_delete", v(p)),
            Call::TargetList => ("target_list", Value::Object(Default::default())),
            Call::TargetSetAcl(p) => ("target_set_acl", v(p)),
            Call::TargetSetChap(p) => ("target_set_chap", v(p)),
            Call::LunAttach(p) => ("lun_attach", v(p)),
            Call::LunDetach(p) => ("lun_detach", v(p)),
            Call::LunStats(p) => ("lun_stats", v(p)),
            Call::PortalList => ("portal_list", Value::Object(Default::default())),
            Call::PortalAdd(p) => ("portal_add", v(p)),
            Call::PortalRemove(p) => ("portal_remove", v(p)),
            Call::SessionList(p) => ("session_list", v(p)),
            Call::SessionDrop(p) => ("session_drop", v(p)),
            Call::Bind(p) => ("bind", v(p)),
            Call::Unbind(p) => ("unbind", v(p)),
            Call::BindingList(p) => ("binding_list", v(p)),
            Call::Volume { method, params } | Call::Migration { method, params } => {
                return (method.clone(), params.clone())
            }
            Call::Array(call) => {
                let (method, params) = call.to_method_params();
                return (method.to_string(), params);
            }
            Call::Pool(call) => {
                let (method, params) = call.to_method_params();
                return (method.to_string(), params);
            }
        };
        (method.to_string(), params)
    }

    /// Whether the call changes the configuration (and so is made durable first).
    pub fn changes_state(&self) -> bool {
        matches!(
            self,
            Call::TargetCreate(_)
                | Call::TargetDelete(_)
                | Call::TargetSetAcl(_)
                | Call::TargetSetChap(_)
                | Call::LunAttach(_)
                | Call::LunDetach(_)
                | Call::PortalAdd(_)
                | Call::PortalRemove(_)
                | Call::Bind(_)
                | Call::Unbind(_)
        )
    }
}

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `None` for a notification (no `id` member): it gets no response.
    pub id: Option<Id>,
    pub call: Call,
}

/// Why a request line was refused, with the id to answer under when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub id: Id,
    pub error: RpcError,
}

/// Parses one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, Refusal> {
    let refuse = |id: Id, code, message: String| Refusal {
        id,
        error: RpcError::new(code, message),
    };
    if line.len() > MAX_REQUEST_BYTES {
        return Err(refuse(
            Id::Null,
            ErrorCode::InvalidRequest,
            format!(
                "request of {} bytes; at most {MAX_REQUEST_BYTES} are accepted",
                line.len()
            ),
        ));
    }
    // serde_json bounds nesting (128 levels), so a deep input is an error, not a crash.
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| refuse(Id::Null, ErrorCode::Parse, format!("not JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(refuse(
            Id::Null,
            ErrorCode::InvalidRequest,
            "a request is a JSON object (batches are not supported)".into(),
        ));
    };
    let id = match object.remove("id") {
        None => None,
        Some(id) => Some(serde_json::from_value::<Id>(id).map_err(|_| {
            refuse(
                Id::Null,
                ErrorCode::InvalidRequest,
                "\"id\" must be a number, a string or null".into(),
            )
        })?),
    };
    let answer_id = id.clone().unwrap_or(Id::Null);
    match object.remove("jsonrpc") {
        Some(Value::String(version)) if version == "2.0" => {}
        _ => {
            return Err(refuse(
                answer_id,
                ErrorCode::InvalidRequest,
                "\"jsonrpc\" must be \"2.0\"".into(),
            ))
        }
    }
    let Some(Value::String(method)) = object.remove("method") else {
        return Err(refuse(
            answer_id,
            ErrorCode::InvalidRequest,
            "\"method\" must be a string".into(),
        ));
    };
    let params = match object.remove("params") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(params @ Value::Object(_)) => params,
        Some(_) => {
            return Err(refuse(
                answer_id,
                ErrorCode::InvalidParams,
                "\"params\" must be an object (by-name parameters)".into(),
            ))
        }
    };
    if let Some(key) = object.keys().next() {
        return Err(refuse(
            answer_id,
            ErrorCode::InvalidRequest,
            format!("unknown member \"{key}\" in the request"),
        ));
    }
    let call = parse_call(&method, params).map_err(|error| Refusal {
        id: answer_id,
        error,
    })?;
    Ok(Request { id, call })
}

/// The typed call of `method` with `params` (an object).
pub fn parse_call(method: &str, params: Value) -> Result<Call, RpcError> {
    fn typed<T: serde::de::DeserializeOwned>(method: &str, params: Value) -> Result<T, RpcError> {
        serde_json::from_value(params)
            .map_err(|e| RpcError::new(ErrorCode::InvalidParams, format!("{method}: {e}")))
    }
    fn empty(method: &str, params: Value) -> Result<(), RpcError> {
        match params {
            Value::Object(map) if map.is_empty() => Ok(()),
            _ => Err(RpcError::new(
                ErrorCode::InvalidParams,
                format!("{method} takes no parameters"),
            )),
        }
    }
    Ok(match method {
        "target_create" => Call::TargetCreate(typed(method, params)?),
        "target_delete" => Call::TargetDelete(typed(method, params)?),
        "target_list" => {
            empty(method, params)?;
            Call::TargetList
        }
        "target_set_acl" => Call::TargetSetAcl(typed(method, params)?),
        "target_set_chap" => Call::TargetSetChap(typed(method, params)?),
        "lun_attach" => Call::LunAttach(typed(method, params)?),
        "lun_detach" => Call::LunDetach(typed(method, params)?),
        "lun_stats" => Call::LunStats(typed(method, params)?),
        "portal_list" => {
            empty(method, params)?;
            Call::PortalList
        }
        "portal_add" => Call::PortalAdd(typed(method, params)?),
        "portal_remove" => Call::PortalRemove(typed(method, params)?),
        "session_list" => Call::SessionList(typed(method, params)?),
        "session_drop" => Call::SessionDrop(typed(method, params)?),
        "bind" => Call::Bind(typed(method, params)?),
        "unbind" => Call::Unbind(typed(method, params)?),
        "binding_list" => Call::BindingList(typed(method, params)?),
        array if super::array_rpc::ARRAY_METHODS.contains(&array) => Call::Array(
            super::array_rpc::ArrayCall::parse(array, params)
                .unwrap_or_else(|| Err(RpcError::new(ErrorCode::MethodNotFound, array)))?,
        ),
        pool if super::pools::POOL_METHODS.contains(&pool) => {
            Call::Pool(super::pools::PoolCall::parse(pool, params)?)
        }
        volume if volume.starts_with("volume_") => Call::Volume {
            method: volume.to_string(),
            params,
        },
        known
            if METHODS.contains(&known)
                && (known.starts_with("migrate_") || known.starts_with("changes_")) =>
        {
            Call::Migration {
                method: known.to_string(),
                params,
            }
        }
        other => {
            return Err(RpcError::new(
                ErrorCode::MethodNotFound,
                format!(
                    "no method \"{}\"; the methods are {}",
                    other.chars().take(64).collect::<String>(),
                    METHODS.join(", ")
                ),
            ))
        }
    })
}

/// A request line (with its newline), as a client sends it.
pub fn encode_request(id: i64, call: &Call) -> Vec<u8> {
    let (method, params) = call.to_method_params();
    let mut line = serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": method,
        "params": params,
    }))
    .unwrap_or_default();
    line.push(b'\n');
    line
}

/// A response line (with its newline).
pub fn encode_response(id: &Id, outcome: &Result<Value, RpcError>) -> Vec<u8> {
    /// The response object, serialized from borrowed parts: `json!` with the result in
    /// it made a deep copy of the whole answer first (a batch's rows, once more).
    #[derive(Serialize)]
    struct Response<'a> {
        // In the order `json!` (a sorted map) wrote them: the same bytes as before.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<ErrorObject<'a>>,
        id: &'a Id,
        jsonrpc: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<&'a Value>,
    }
    #[derive(Serialize)]
    struct ErrorObject<'a> {
        code: i64,
        message: &'a str,
    }
    let response = match outcome {
        Ok(result) => Response {
            jsonrpc: "2.0",
            id,
            result: Some(result),
            error: None,
        },
        Err(error) => Response {
            jsonrpc: "2.0",
            id,
            result: None,
            error: Some(ErrorObject {
                code: error.code.code(),
                message: &error.message,
            }),
        },
    };
    let mut line = serde_json::to_vec(&response).unwrap_or_default();
    line.push(b'\n');
    line
}

/// What a client makes of a response line: the result, or the server's error (its code
/// and message as sent).
pub fn decode_response(line: &[u8]) -> Result<Value, (i64, String)> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        (
            ErrorCode::Parse.code(),
            format!("response is not JSON: {e}"),
        )
    })?;
    if let Some(error) = value.get("error") {
        let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("error without a message")
            .to_string();
        return Err((code, message));
    }
    value.get("result").cloned().ok_or_else(|| {
        (
            ErrorCode::InvalidRequest.code(),
            "response without result".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(line: &str) -> Refusal {
        parse_request(line.as_bytes()).expect_err(line)
    }

    /// A number in a request's parameters comes back the same after our encoding (the
    /// journal stores calls so), even one that no `f64` holds exactly. Found by the
    /// control_rpc fuzz target: without serde_json's correctly rounded float parsing,
    /// -1.1111111111111108e81 came back as -1.111111111111111e81.
    #[test]
    fn numbers_in_parameters_survive_encoding_exactly() {
        let digits = format!("-{}0", "1".repeat(81));
        for number in [
            digits.as_str(),
            "-1.1111111111111108e81",
            "0.1",
            "1e-300",
            "3.5",
        ] {
            let line = format!(
                r#"{{"jsonrpc":"2.0","id":7,"method":"volume_create","params":{{"x":{number},"name":"v"}}}}"#
            );
            let request = parse_request(line.as_bytes()).expect("a volume call");
            let encoded = encode_request(1, &request.call);
            let again = parse_request(&encoded[..encoded.len() - 1]).expect("our own encoding");
            assert_eq!(again.call, request.call, "{number}");
        }
    }

    /// A response is written from borrowed parts, byte for byte what the `json!` object
    /// (a sorted map) gave, for results and for errors.
    #[test]
    fn responses_keep_their_bytes() {
        let result = serde_json::json!({"bindings": [{"volume": "v1", "secondary": 1}]});
        let error = RpcError::new(ErrorCode::NotFound, "no target t");
        for id in [Id::Number(7), Id::Text("x".into()), Id::Null] {
            let mut expected = serde_json::to_vec(
                &serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result}),
            )
            .unwrap();
            expected.push(b'\n');
            assert_eq!(encode_response(&id, &Ok(result.clone())), expected);
            let mut expected = serde_json::to_vec(&serde_json::json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": { "code": error.code.code(), "message": error.message },
            }))
            .unwrap();
            expected.push(b'\n');
            assert_eq!(encode_response(&id, &Err(error.clone())), expected);
        }
    }

    #[test]
    fn a_request_parses_into_its_typed_call() {
        let request = parse_request(
            br#"{"jsonrpc":"2.0","id":7,"method":"lun_attach","params":{"target":"iqn.2026-01.t:a","lun":3,"backend":"ram:1M"}}"#,
        )
        .unwrap();
        assert_eq!(request.id, Some(Id::Number(7)));
        assert_eq!(
            request.call,
            Call::LunAttach(LunAttach {
                target: "iqn.2026-01.t:a".into(),
                lun: 3,
                backend: "ram:1M".into()
            })
        );
        let notification = parse_request(br#"{"jsonrpc":"2.0","method":"target_list"}"#).unwrap();
        assert_eq!(notification.id, None);
    }

    #[test]
    fn what_a_client_encodes_the_server_parses_back() {
        let call = Call::TargetCreate(TargetCreate {
            name: "iqn.2026-01.t:a".into(),
            alias: Some("a".into()),
            allowed_initiators: Some(vec!["iqn.2026-01.i:x".into()]),
            chap: Some(Chap {
                user: "u".into(),
                secret: "0123456789abcdef".into(),
            }),
            mutual_chap: None,
            luns: vec![NewLun {
                lun: 1,
                backend: "ram:1M".into(),
            }],
        });
        let line = encode_request(1, &call);
        let parsed = parse_request(&line[..line.len() - 1]).unwrap();
        assert_eq!(parsed.call, call);
        let ok = encode_response(&Id::Number(1), &Ok(serde_json::json!({"a": 1})));
        assert_eq!(decode_response(&ok).unwrap(), serde_json::json!({"a": 1}));
        let err = encode_response(
            &Id::Number(1),
            &Err(RpcError::new(ErrorCode::NotFound, "no target x")),
        );
        assert_eq!(decode_response(&err), Err((-32001, "no target x".into())));
    }

    #[test]
    fn bad_requests_get_the_json_rpc_code_and_a_message_naming_the_problem() {
        assert_eq!(refused("{").error.code, ErrorCode::Parse);
        assert_eq!(refused("[]").error.code, ErrorCode::InvalidRequest);
        let r = refused(r#"{"jsonrpc":"1.0","id":1,"method":"target_list"}"#);
        assert_eq!(
            (r.id, r.error.code),
            (Id::Number(1), ErrorCode::InvalidRequest)
        );
        let r = refused(r#"{"jsonrpc":"2.0","id":"a","method":"target_frob"}"#);
        assert_eq!(r.error.code, ErrorCode::MethodNotFound);
        assert!(
            r.error.message.contains("target_frob"),
            "{}",
            r.error.message
        );
        let r = refused(
            r#"{"jsonrpc":"2.0","id":2,"method":"lun_attach","params":{"target":"t","lun":"x","backend":"ram:1M"}}"#,
        );
        assert_eq!(r.error.code, ErrorCode::InvalidParams);
        assert!(
            r.error.message.contains("lun_attach"),
            "{}",
            r.error.message
        );
        let r = refused(
            r#"{"jsonrpc":"2.0","id":2,"method":"lun_detach","params":{"target":"t","lun":1,"force":true}}"#,
        );
        assert!(r.error.message.contains("force"), "{}", r.error.message);
        let r = refused(r#"{"jsonrpc":"2.0","id":2,"method":"target_delete"}"#);
        assert!(r.error.message.contains("name"), "{}", r.error.message);
        let r = refused(r#"{"jsonrpc":"2.0","id":2,"method":"target_list","params":[1]}"#);
        assert_eq!(r.error.code, ErrorCode::InvalidParams);
        let r = refused(r#"{"jsonrpc":"2.0","id":2,"method":"target_list","extra":1}"#);
        assert_eq!(r.error.code, ErrorCode::InvalidRequest);
        let long = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"target_delete","params":{{"name":"{}"}}}}"#,
            "a".repeat(MAX_REQUEST_BYTES)
        );
        assert_eq!(refused(&long).error.code, ErrorCode::InvalidRequest);
        let deep = "[".repeat(10_000);
        assert_eq!(refused(&deep).error.code, ErrorCode::Parse);
    }

    #[test]
    fn volume_methods_are_handed_on_with_their_parameters() {
        let request = parse_request(
            br#"{"jsonrpc":"2.0","id":1,"method":"volume_create","params":{"name":"v","size":"1T"}}"#,
        )
        .unwrap();
        assert!(
            matches!(request.call, Call::Volume { ref method, .. } if method == "volume_create")
        );
    }
}
