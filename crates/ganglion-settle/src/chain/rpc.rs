//! A JSON-RPC chain node over plain HTTP (anvil, a local node, or a proxy in front of a
//! public one). Transactions are signed here (legacy EIP-155, [`super::tx`]) and sent raw, so
//! the node needs no unlocked accounts.
//!
//! Every answer is bounded ([`RESPONSE_MAX`]) and every call has a deadline
//! ([`CALL_TIMEOUT`], [`MINE_TIMEOUT`] for a transaction to be mined).

#![allow(clippy::disallowed_methods)] // a chain host is a driver: it owns the chain's clock

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy_primitives::{hex, Bytes, LogData, B256, U256};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tx::LegacyTx;
use super::{describe_revert, ChainError, Log, Receipt};
use ganglion_types::pay::{Address, PayKey};

/// Largest HTTP response read from a node.
pub const RESPONSE_MAX: usize = 16 * 1024 * 1024;
/// Deadline of one JSON-RPC call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a sent transaction may take to be mined.
pub const MINE_TIMEOUT: Duration = Duration::from_secs(120);

/// A JSON-RPC node.
#[derive(Debug)]
pub struct Rpc {
    url: String,
    host: String,
    port: u16,
    path: String,
    chain_id: u64,
    next_id: AtomicU64,
    /// One transaction at a time from this client: each takes the next nonce only once the
    /// last is mined.
    sending: tokio::sync::Mutex<()>,
}

fn text<'a>(value: &'a Value, what: &'static str) -> Result<&'a str, ChainError> {
    value.as_str().ok_or(ChainError::Decode {
        what,
        why: format!("not a string: {value}"),
    })
}

fn hex_u64(value: &Value, what: &'static str) -> Result<u64, ChainError> {
    let text = text(value, what)?;
    u64::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|e| ChainError::Decode {
        what,
        why: format!("{text}: {e}"),
    })
}

fn hex_bytes(value: &Value, what: &'static str) -> Result<Vec<u8>, ChainError> {
    hex::decode(text(value, what)?).map_err(|e| ChainError::Decode {
        what,
        why: e.to_string(),
    })
}

fn hex_u256(value: &Value, what: &'static str) -> Result<U256, ChainError> {
    let text = text(value, what)?;
    U256::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|e| ChainError::Decode {
        what,
        why: format!("{text}: {e}"),
    })
}

fn address_of(value: &Value, what: &'static str) -> Result<Address, ChainError> {
    let bytes = hex_bytes(value, what)?;
    let array: [u8; 20] = bytes.try_into().map_err(|_| ChainError::Decode {
        what,
        why: "not 20 bytes".to_owned(),
    })?;
    Ok(Address(array))
}

/// A JSON-RPC error object as an error.
fn node_error(error: &Value) -> ChainError {
    ChainError::Node {
        code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
        message: error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)")
            .to_owned(),
    }
}

/// The revert data a node attaches to an error (anvil and geth put it in `error.data`,
/// either as a hex string or as an object holding one).
fn revert_data(error: &Value) -> Option<Vec<u8>> {
    let data = error.get("data")?;
    let text = data
        .as_str()
        .or_else(|| data.get("data").and_then(Value::as_str))?;
    hex::decode(text).ok()
}

impl Rpc {
    /// Connects to `url` (`http://host:port/path`) and asks for its chain id.
    pub async fn connect(url: &str) -> Result<Self, ChainError> {
        let transport = |why: String| ChainError::Transport {
            url: url.to_owned(),
            why,
        };
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", _)) => return Err(transport(
                "https is not supported; use a plain-http node, or a local proxy in front of it"
                    .to_owned(),
            )),
            _ => return Err(transport("not an http:// URL".to_owned())),
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|e| transport(format!("port {port}: {e}")))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(transport("no host".to_owned()));
        }
        let mut rpc = Self {
            url: url.to_owned(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            path: path.to_owned(),
            chain_id: 0,
            next_id: AtomicU64::new(1),
            sending: tokio::sync::Mutex::new(()),
        };
        rpc.chain_id = hex_u64(&rpc.request("eth_chainId", json!([])).await?, "chain id")?;
        // EIP-155's v is 2 × chain id + 35: keep it far from overflowing (2^53, as wallets do).
        if rpc.chain_id == 0 || rpc.chain_id > 1 << 53 {
            return Err(rpc.transport(format!(
                "chain id {} is not a usable chain id",
                rpc.chain_id
            )));
        }
        Ok(rpc)
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn transport(&self, why: impl Into<String>) -> ChainError {
        ChainError::Transport {
            url: self.url.clone(),
            why: why.into(),
        }
    }

    async fn post(&self, body: &[u8]) -> Result<Vec<u8>, ChainError> {
        let mut stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.transport(e.to_string()))?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.path,
            self.host,
            self.port,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| self.transport(e.to_string()))?;
        stream
            .write_all(body)
            .await
            .map_err(|e| self.transport(e.to_string()))?;
        let mut response = Vec::new();
        let mut limited = (&mut stream).take(RESPONSE_MAX as u64 + 1);
        limited
            .read_to_end(&mut response)
            .await
            .map_err(|e| self.transport(e.to_string()))?;
        if response.len() > RESPONSE_MAX {
            return Err(self.transport(format!("response over {RESPONSE_MAX} bytes")));
        }
        parse_http(&response).map_err(|why| self.transport(why))
    }

    /// One JSON-RPC call: its `result`, or the node's error.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, ChainError> {
        self.request_raw(method, params)
            .await?
            .map_err(|error| node_error(&error))
    }

    /// One JSON-RPC call: `Ok(result)` or `Ok(Err(error object))`; `Err` for transport trouble.
    async fn request_raw(
        &self,
        method: &str,
        params: Value,
    ) -> Result<Result<Value, Value>, ChainError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let body = serde_json::to_vec(&body).map_err(|e| self.transport(e.to_string()))?;
        let bytes = tokio::time::timeout(CALL_TIMEOUT, self.post(&body))
            .await
            .map_err(|_| self.transport(format!("{method}: no answer in {CALL_TIMEOUT:?}")))??;
        let mut answer: Value = serde_json::from_slice(&bytes)
            .map_err(|e| self.transport(format!("{method}: not JSON: {e}")))?;
        if let Some(error) = answer.get_mut("error") {
            return Ok(Err(error.take()));
        }
        match answer.get_mut("result") {
            Some(result) => Ok(Ok(result.take())),
            None => Err(self.transport(format!("{method}: neither result nor error"))),
        }
    }

    /// A call's error: a revert with its decoded reason, or the node's error.
    fn call_error(error: &Value) -> ChainError {
        if let Some(data) = revert_data(error) {
            return ChainError::Reverted(describe_revert(&data));
        }
        node_error(error)
    }

    pub async fn call(&self, to: Address, data: Vec<u8>) -> Result<Bytes, ChainError> {
        let params =
            json!([{"to": to.to_string(), "data": format!("0x{}", hex::encode(&data))}, "latest"]);
        match self.request_raw("eth_call", params).await? {
            Ok(result) => Ok(Bytes::from(hex_bytes(&result, "call result")?)),
            Err(error) => Err(Self::call_error(&error)),
        }
    }

    pub async fn send(
        &self,
        key: &PayKey,
        to: Option<Address>,
        data: Vec<u8>,
    ) -> Result<Receipt, ChainError> {
        let _one_at_a_time = self.sending.lock().await;
        let from = key.address().to_string();
        let nonce = hex_u64(
            &self
                .request("eth_getTransactionCount", json!([from, "pending"]))
                .await?,
            "nonce",
        )?;
        let gas_price = hex_u256(&self.request("eth_gasPrice", json!([])).await?, "gas price")?;
        let gas_price = u128::try_from(gas_price).map_err(|_| ChainError::Decode {
            what: "gas price",
            why: "over 2^128".to_owned(),
        })?;
        let mut estimate = json!({"from": from, "data": format!("0x{}", hex::encode(&data))});
        if let Some(to) = to {
            estimate["to"] = json!(to.to_string());
        }
        let gas = match self
            .request_raw("eth_estimateGas", json!([estimate]))
            .await?
        {
            Ok(gas) => hex_u64(&gas, "gas estimate")?,
            Err(error) => return Err(Self::call_error(&error)),
        };
        let tx = LegacyTx {
            chain_id: self.chain_id,
            nonce,
            // A quarter over the node's price: the base fee may rise before it is mined.
            gas_price: gas_price.saturating_add(gas_price / 4),
            // Estimates are tight; a little headroom for state that moves meanwhile.
            gas: gas.saturating_mul(6) / 5 + 10_000,
            to,
            value: U256::ZERO,
            data,
        };
        let raw = tx
            .sign(key)
            .map_err(|e| ChainError::Refused(e.to_string()))?;
        // The hash is ours to compute, not the node's to tell.
        let hash_text = format!("0x{}", hex::encode(alloy_primitives::keccak256(&raw)));
        if let Err(error) = self
            .request_raw(
                "eth_sendRawTransaction",
                json!([format!("0x{}", hex::encode(&raw))]),
            )
            .await?
        {
            return Err(Self::call_error(&error));
        }
        // Sent: from here a failure must not read as "not sent". Poll (a lost answer or a
        // busy node is retried) until it is mined or the wait runs out.
        let started = tokio::time::Instant::now();
        let mut wait = Duration::from_millis(20);
        let receipt = loop {
            match self
                .request("eth_getTransactionReceipt", json!([hash_text]))
                .await
            {
                Ok(receipt) if !receipt.is_null() => break receipt,
                Ok(_) => {}
                Err(e) => tracing::debug!("receipt of {hash_text}: {e}; asking again"),
            }
            if started.elapsed() > MINE_TIMEOUT {
                return Err(self.transport(format!(
                    "transaction {hash_text} (nonce {nonce}) was sent but not seen mined within {MINE_TIMEOUT:?}: check it before sending again"
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
        };
        parse_receipt(&receipt)
    }

    pub async fn now(&self) -> Result<u64, ChainError> {
        let block = self
            .request("eth_getBlockByNumber", json!(["latest", false]))
            .await?;
        hex_u64(&block["timestamp"], "block timestamp")
    }

    pub async fn gas_balance(&self, who: Address) -> Result<U256, ChainError> {
        hex_u256(
            &self
                .request("eth_getBalance", json!([who.to_string(), "latest"]))
                .await?,
            "balance",
        )
    }

    fn dev_only(&self, method: &str, e: ChainError) -> ChainError {
        match e {
            ChainError::Node { message, .. } => ChainError::Unsupported(format!(
                "{method} is a development-chain call (anvil), and {} refused it: {message}",
                self.url
            )),
            other => other,
        }
    }

    pub async fn fund_gas(&self, who: Address, wei: U256) -> Result<(), ChainError> {
        self.request(
            "anvil_setBalance",
            json!([who.to_string(), format!("0x{wei:x}")]),
        )
        .await
        .map_err(|e| self.dev_only("anvil_setBalance", e))?;
        Ok(())
    }

    pub async fn advance(&self, seconds: u64) -> Result<(), ChainError> {
        self.request("evm_increaseTime", json!([seconds]))
            .await
            .map_err(|e| self.dev_only("evm_increaseTime", e))?;
        self.request("evm_mine", json!([]))
            .await
            .map_err(|e| self.dev_only("evm_mine", e))?;
        Ok(())
    }
}

fn parse_receipt(receipt: &Value) -> Result<Receipt, ChainError> {
    let hash = hex_bytes(&receipt["transactionHash"], "transaction hash")?;
    let hash = B256::try_from(hash.as_slice()).map_err(|e| ChainError::Decode {
        what: "transaction hash",
        why: e.to_string(),
    })?;
    let gas_used = hex_u64(&receipt["gasUsed"], "gas used")?;
    if hex_u64(&receipt["status"], "receipt status")? != 1 {
        return Err(ChainError::Reverted(format!(
            "transaction {hash} failed on chain after {gas_used} gas"
        )));
    }
    let created = match &receipt["contractAddress"] {
        Value::Null => None,
        value => Some(address_of(value, "contract address")?),
    };
    let mut logs = Vec::new();
    for log in receipt["logs"].as_array().into_iter().flatten() {
        let topics = log["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                hex_bytes(t, "log topic").and_then(|b| {
                    B256::try_from(b.as_slice()).map_err(|e| ChainError::Decode {
                        what: "log topic",
                        why: e.to_string(),
                    })
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let data = hex_bytes(&log["data"], "log data")?;
        logs.push(Log {
            address: address_of(&log["address"], "log address")?,
            data: LogData::new_unchecked(topics, Bytes::from(data)),
        });
    }
    Ok(Receipt {
        gas_used,
        logs,
        created,
    })
}

/// The body of an HTTP/1.1 response with status 200 (plain or chunked).
fn parse_http(response: &[u8]) -> Result<Vec<u8>, String> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of HTTP headers")?;
    let head = std::str::from_utf8(&response[..split]).map_err(|_| "HTTP headers not UTF-8")?;
    let body = &response[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    if code != "200" {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(format!("HTTP {status}: {text}"));
    }
    Ok(body)
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&body[..end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        if size > RESPONSE_MAX {
            return Err(format!(
                "chunk of {size} bytes, more than a response may hold"
            ));
        }
        body = &body[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err("truncated chunk".to_owned());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_bodies_plain_and_chunked_and_errors() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_http(plain).as_deref(), Ok(&b"{}"[..]));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n2\r\n\"}\r\n0\r\n\r\n";
        assert_eq!(parse_http(chunked).as_deref(), Ok(&b"{\"a\"}"[..]));
        assert!(parse_http(b"HTTP/1.1 500 Oops\r\n\r\nboom").is_err());
        assert!(parse_http(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(
            parse_http(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nab").is_err()
        );
        assert!(
            parse_http(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
        // A hostile size is an error, not an overflow.
        let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab";
        assert!(parse_http(huge).is_err());
    }

    proptest::proptest! {
        /// Whatever a node sends back, the parser answers with a body or an error.
        #[test]
        fn any_response_parses_or_is_refused(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_http(&bytes);
            let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            chunked.extend_from_slice(&bytes);
            let _ = parse_http(&chunked);
        }
    }

    #[tokio::test]
    async fn urls_that_cannot_work_are_refused_with_a_reason() {
        for (url, why) in [
            ("https://example.invalid", "https is not supported"),
            ("ftp://x", "not an http:// URL"),
            ("http://:80", "no host"),
            ("http://localhost:99999", "port"),
        ] {
            let err = Rpc::connect(url).await.err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(why)),
                "{url}: {err:?}"
            );
        }
    }
}
