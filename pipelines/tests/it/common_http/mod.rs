//! The loopback HTTP/1.1 server of every test that downloads or calls a service (the crates'
//! tests include this file): `GET /path` answers from a table of routes, each a list of responses
//! served in turn (the last one repeats), so a test can make the first tries fail; unknown paths
//! get a 404. Bounded: it stops when dropped, after 10 minutes, or after 10,000 connections,
//! whatever the test does.
//!
//! [`Server::start_fn`] answers every request (method, path, headers, body) with a function
//! instead, each connection on its own thread: API clients (the LLM judge) and the fake Hugging
//! Face hub of the CLI tests are built on it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One canned answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this body.
    Ok(Vec<u8>),
    /// This status and a short text body.
    Status(u16, &'static str),
    /// 200 announcing `Content-Length` of the full body, then only `sent` bytes and a closed connection.
    CutShort { body: Vec<u8>, sent: usize },
    /// This status and this body (e.g. a JSON error).
    StatusBody(u16, Vec<u8>),
    /// Wait, then answer (to make a client time out).
    Delayed(Duration, Box<Reply>),
    /// A full status line (`302 Found`), headers of its own, and a body sent unless
    /// `send_body` is false (a HEAD request: `Content-Length` still gives the body's size).
    Raw { status: String, headers: Vec<(String, String)>, body: Vec<u8>, send_body: bool },
}

/// How long a server accepts connections, and how many, whatever the test does.
const LIFETIME: Duration = Duration::from_secs(600);
const MAX_CONNECTIONS: usize = 10_000;

/// A request as [`Server::start_fn`] sees it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

pub struct Server {
    pub base: String,
    /// Every request's path, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Every request in full, in order (only with [`Server::start_fn`]).
    pub full_requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Serves `routes`: path (e.g. `/data.zip`) → replies in turn.
    pub fn start(routes: Vec<(&str, Vec<Reply>)>) -> Self {
        let routes: HashMap<String, Vec<Reply>> = routes.into_iter().map(|(p, r)| (p.to_string(), r)).collect();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stop_flag) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + LIFETIME;
            let mut served: HashMap<String, usize> = HashMap::new();
            let mut connections = 0;
            while !stop_flag.load(Ordering::SeqCst) && Instant::now() < deadline && connections < MAX_CONNECTIONS {
                match listener.accept() {
                    Ok((stream, _)) => {
                        connections += 1;
                        let _ = handle(stream, &routes, &mut served, &log);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { base, requests, full_requests: Arc::default(), stop }
    }

    /// Answers every request with `answer`, each connection on its own thread.
    pub fn start_fn(answer: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let full_requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, full_log, stop_flag, answer) = (requests.clone(), full_requests.clone(), stop.clone(), Arc::new(answer));
        std::thread::spawn(move || {
            let deadline = Instant::now() + LIFETIME;
            let mut connections = 0;
            while !stop_flag.load(Ordering::SeqCst) && Instant::now() < deadline && connections < MAX_CONNECTIONS {
                match listener.accept() {
                    Ok((stream, _)) => {
                        connections += 1;
                        let (log, full_log, answer) = (log.clone(), full_log.clone(), answer.clone());
                        std::thread::spawn(move || {
                            let _ = (|| {
                                let request = read_request(&stream)?;
                                log.lock().unwrap().push(request.path.clone());
                                full_log.lock().unwrap().push(request.clone());
                                write_reply(stream, answer(&request))
                            })();
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { base, requests, full_requests, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn handle(
    stream: TcpStream,
    routes: &HashMap<String, Vec<Reply>>,
    served: &mut HashMap<String, usize>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
    log.lock().unwrap().push(path.clone());
    let reply = match routes.get(&path) {
        Some(replies) => {
            let count = served.entry(path).or_insert(0);
            let reply = replies[(*count).min(replies.len() - 1)].clone();
            *count += 1;
            reply
        }
        None => Reply::Status(404, "Not Found"),
    };
    write_reply(stream, reply)
}

/// Reads a request line, headers and a `Content-Length` body.
fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let length = headers.get("content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    Ok(Request { method, path, headers, body })
}

fn write_reply(mut stream: TcpStream, reply: Reply) -> std::io::Result<()> {
    let (status, body, sent) = match reply {
        Reply::Ok(body) => ("200 OK".to_string(), body.clone(), body.len()),
        Reply::Status(code, text) => (format!("{code} {text}"), text.as_bytes().to_vec(), text.len()),
        Reply::CutShort { body, sent } => ("200 OK".to_string(), body, sent),
        Reply::StatusBody(code, body) => (format!("{code} Status"), body.clone(), body.len()),
        Reply::Delayed(wait, reply) => {
            std::thread::sleep(wait);
            return write_reply(stream, *reply);
        }
        Reply::Raw { status, headers, body, send_body } => {
            write!(stream, "HTTP/1.1 {status}\r\n")?;
            for (name, value) in headers {
                write!(stream, "{name}: {value}\r\n")?;
            }
            write!(stream, "Content-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
            if send_body {
                stream.write_all(&body)?;
            }
            return stream.flush();
        }
    };
    write!(stream, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
    stream.write_all(&body[..sent])?;
    stream.flush()
}

/// The repository's test fixtures.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}
