//! A tiny scripted HTTP/1.1 server on 127.0.0.1 for driver tests: a handler
//! closure answers each request; every request is recorded for assertions.
//! One request per connection (`Connection: close`), no TLS.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct MockRequest {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl MockRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Debug, Clone)]
pub struct MockReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Never answer (hold the connection open).
    pub hang: bool,
}

impl MockReply {
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        MockReply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into().into_bytes(),
            hang: false,
        }
    }
    pub fn bytes(status: u16, body: Vec<u8>) -> Self {
        MockReply {
            status,
            headers: vec![("Content-Type".into(), "application/octet-stream".into())],
            body,
            hang: false,
        }
    }
    pub fn empty(status: u16) -> Self {
        MockReply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            hang: false,
        }
    }
    pub fn hang() -> Self {
        MockReply {
            hang: true,
            ..MockReply::empty(200)
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
}

type Handler = Arc<dyn Fn(&MockRequest) -> MockReply + Send + Sync>;

pub struct MockServer {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<MockRequest>>>,
    task: JoinHandle<()>,
}

impl MockServer {
    pub async fn start(
        handler: impl Fn(&MockRequest) -> MockReply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<MockRequest>>> = Arc::default();
        let handler: Handler = Arc::new(handler);
        let task = {
            let log = log.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((sock, _)) = listener.accept().await else {
                        continue;
                    };
                    let (log, handler) = (log.clone(), handler.clone());
                    tokio::spawn(async move {
                        let _ = serve(sock, log, handler).await;
                    });
                }
            })
        };
        MockServer { addr, log, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> Vec<MockRequest> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut sock: TcpStream,
    log: Arc<Mutex<Vec<MockRequest>>>,
    handler: Handler,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..(head_end + len).min(buf.len())]).to_string();
    let req = MockRequest {
        method,
        path,
        headers,
        body,
    };
    log.lock().unwrap().push(req.clone());
    let reply = handler(&req);
    if reply.hang {
        std::future::pending::<()>().await;
    }
    let mut out = format!("HTTP/1.1 {} X\r\n", reply.status);
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    ));
    sock.write_all(out.as_bytes()).await?;
    sock.write_all(&reply.body).await?;
    sock.shutdown().await
}
