//! vCPU threads from a QMP monitor socket the operator configured (Kata's
//! `extra_monitor_socket = "qmp"`, say): connect, ask `query-cpus-fast`, close.
//!
//! A QEMU chardev serves one client at a time, so the connection is kept as short as the
//! exchange, and the whole exchange (connect, greeting, `qmp_capabilities`, the query) has one
//! deadline: a monitor in use by someone else, or a QEMU that sends events but never answers,
//! costs the agent that long and no longer.

use crate::error::{Error, Result};
use rustix::net::{self as rnet, sockopt, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest line a monitor may send: `query-cpus-fast` of thousands of vCPUs stays far below.
const MAX_MESSAGE: usize = 16 << 20;

fn qmp_error(socket: &Path, reason: impl Into<String>) -> Error {
    Error::Qmp { socket: socket.to_path_buf(), reason: reason.into() }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

struct Monitor<'a> {
    socket: &'a Path,
    reader: BufReader<UnixStream>,
    timeout: Duration,
    deadline: Instant,
}

impl<'a> Monitor<'a> {
    fn connect(socket: &'a Path, timeout: Duration) -> Result<Monitor<'a>> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match connect_within(socket, left) {
                Ok(stream) => break stream,
                Err(e) if e.kind() == ErrorKind::Interrupted && !left.is_zero() => continue,
                Err(e) if is_timeout(&e) => return Err(late(socket, timeout)),
                Err(e) => return Err(qmp_error(socket, e.to_string())),
            }
        };
        let mut monitor = Monitor { socket, reader: BufReader::new(stream), timeout, deadline };
        let greeting = monitor.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(qmp_error(socket, format!("expected the QMP greeting, got {greeting}")));
        }
        monitor.execute("qmp_capabilities")?;
        Ok(monitor)
    }

    /// Time left until the deadline; an error once it has passed.
    fn left(&self) -> Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(late(self.socket, self.timeout));
        }
        Ok(left)
    }

    fn io_error(&self, e: io::Error) -> Error {
        if is_timeout(&e) {
            late(self.socket, self.timeout)
        } else {
            qmp_error(self.socket, e.to_string())
        }
    }

    /// One line of the monitor, read within what is left of the deadline (each read of the
    /// socket waits only that long, however the line trickles in).
    fn read_message(&mut self) -> Result<Value> {
        let mut line = Vec::new();
        loop {
            let left = self.left()?;
            self.reader.get_ref().set_read_timeout(Some(left)).map_err(|e| self.io_error(e))?;
            let available = match self.reader.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(e)),
            };
            if available.is_empty() {
                return Err(qmp_error(self.socket, "the monitor closed the connection"));
            }
            let end = available.iter().position(|&b| b == b'\n');
            let used = end.map_or(available.len(), |end| end + 1);
            line.extend_from_slice(&available[..used]);
            self.reader.consume(used);
            if end.is_some() {
                break;
            }
            if line.len() > MAX_MESSAGE {
                return Err(qmp_error(self.socket, "a message longer than 16 MiB: not QMP"));
            }
        }
        serde_json::from_slice(&line).map_err(|e| {
            let text = String::from_utf8_lossy(&line);
            qmp_error(self.socket, format!("not JSON ({e}): {:?}", text.trim()))
        })
    }

    /// Run one command; asynchronous events that arrive meanwhile are passed over.
    fn execute(&mut self, command: &str) -> Result<Value> {
        let request = format!("{{\"execute\": \"{command}\"}}\n");
        let left = self.left()?;
        let stream = self.reader.get_mut();
        let written = stream
            .set_write_timeout(Some(left))
            .and_then(|()| stream.write_all(request.as_bytes()));
        written.map_err(|e| self.io_error(e))?;
        loop {
            let mut message = self.read_message()?;
            if let Some(value) = message.get_mut("return") {
                return Ok(value.take());
            }
            if let Some(error) = message.get("error") {
                return Err(qmp_error(self.socket, format!("{command} failed: {error}")));
            }
        }
    }
}

/// A connected stream, or the error of `connect(2)`. The send timeout bounds `connect`: on a
/// Unix socket it waits that long while the listener's queue of pending connections is full.
fn connect_within(socket: &Path, timeout: Duration) -> io::Result<UnixStream> {
    if timeout.is_zero() {
        return Err(ErrorKind::TimedOut.into());
    }
    let fd =
        rnet::socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, Some(timeout))?;
    rnet::connect(&fd, &SocketAddrUnix::new(socket)?)?;
    Ok(UnixStream::from(fd))
}

fn late(socket: &Path, timeout: Duration) -> Error {
    let seconds = timeout.as_millis() as f64 / 1000.0;
    qmp_error(
        socket,
        format!(
            "no complete answer within {seconds} s (is another client connected, or is QEMU \
             stalled?)"
        ),
    )
}

/// vCPU index → thread id from `query-cpus-fast` (`cpu-index`, `thread-id`); `timeout` bounds
/// the whole exchange, from connect to the answer.
pub fn query_vcpu_threads(socket: &Path, timeout: Duration) -> Result<BTreeMap<u32, i32>> {
    let mut monitor = Monitor::connect(socket, timeout)?;
    let cpus = monitor.execute("query-cpus-fast")?;
    drop(monitor);
    parse_cpus_fast(&cpus).map_err(|reason| qmp_error(socket, reason))
}

/// The `return` value of `query-cpus-fast` → vCPU index → thread id.
pub fn parse_cpus_fast(value: &Value) -> std::result::Result<BTreeMap<u32, i32>, String> {
    let items = value.as_array().ok_or_else(|| format!("query-cpus-fast returned {value}"))?;
    let mut threads = BTreeMap::new();
    for item in items {
        let field = |key: &str| item.get(key).and_then(Value::as_i64);
        let (Some(index), Some(tid)) = (field("cpu-index"), field("thread-id")) else {
            return Err(format!("query-cpus-fast item without cpu-index/thread-id: {item}"));
        };
        let index = u32::try_from(index).map_err(|_| format!("cpu-index {index} out of range"))?;
        let tid = i32::try_from(tid).map_err(|_| format!("thread-id {tid} out of range"))?;
        threads.insert(index, tid);
    }
    Ok(threads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::thread;
    use std::time::Instant;

    #[test]
    fn cpus_fast_reply() {
        let reply: Value = serde_json::from_str(
            r#"[{"thread-id": 101, "props": {"core-id": 0, "thread-id": 0, "socket-id": 0},
                 "qom-path": "/machine/unattached/device[0]", "cpu-index": 0, "target": "x86_64"},
                {"thread-id": 102, "cpu-index": 1, "target": "x86_64"}]"#,
        )
        .unwrap();
        let threads = parse_cpus_fast(&reply).unwrap();
        assert_eq!(threads.into_iter().collect::<Vec<_>>(), vec![(0, 101), (1, 102)]);
        assert!(parse_cpus_fast(&serde_json::json!([{"cpu-index": 0}])).is_err());
        assert!(parse_cpus_fast(&serde_json::json!({})).is_err());
    }

    /// A monitor that speaks the protocol as QEMU does, with an event in between.
    #[test]
    fn talks_to_a_monitor() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            writer.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n").unwrap();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.contains("qmp_capabilities"));
            writer.write_all(b"{\"return\": {}}\r\n").unwrap();
            line.clear();
            reader.read_line(&mut line).unwrap();
            assert!(line.contains("query-cpus-fast"));
            writer.write_all(b"{\"event\": \"RESUME\", \"timestamp\": {}}\r\n").unwrap();
            writer.write_all(b"{\"return\": [{\"cpu-index\": 0, \"thread-id\": 7}]}\r\n").unwrap();
        });
        let threads = query_vcpu_threads(&socket, Duration::from_secs(5)).unwrap();
        server.join().unwrap();
        assert_eq!(threads.get(&0), Some(&7));
    }

    /// Greets, then sends an event every 50 ms and never a `return` (a stalled QEMU), for at
    /// most `chatter` in all; then closes.
    fn chatty_monitor(socket: &Path, chatter: Duration) -> thread::JoinHandle<()> {
        let listener = UnixListener::bind(socket).unwrap();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let end = Instant::now() + chatter;
            let _ = stream.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n");
            while Instant::now() < end {
                let event = b"{\"event\": \"RTC_CHANGE\", \"timestamp\": {}}\r\n";
                if stream.write_all(event).is_err() {
                    return; // the client gave up
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    }

    #[test]
    fn one_deadline_for_the_whole_exchange() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let server = chatty_monitor(&socket, Duration::from_secs(5));
        let err = query_vcpu_threads(&socket, Duration::from_millis(300)).unwrap_err();
        server.join().unwrap();
        assert!(err.to_string().contains("no complete answer within 0.3 s"), "{err}");
    }

    /// A listener whose queue of pending connections is full: connect(2) blocks until the
    /// send timeout. The listener closes after 5 s, so a client without one fails then.
    #[test]
    fn connect_to_a_full_listener_meets_the_deadline() {
        use rustix::net::{self as rnet, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let listener =
            rnet::socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)
                .unwrap();
        let addr = SocketAddrUnix::new(socket.as_path()).unwrap();
        rnet::bind(&listener, &addr).unwrap();
        rnet::listen(&listener, 0).unwrap();
        let mut pending = Vec::new();
        loop {
            let flags = SocketFlags::CLOEXEC | SocketFlags::NONBLOCK;
            let client =
                rnet::socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None).unwrap();
            match rnet::connect(&client, &addr) {
                Ok(()) => pending.push(client),
                Err(rustix::io::Errno::AGAIN) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let closer = thread::spawn(move || {
            let _ = finished.recv_timeout(Duration::from_secs(5));
            drop(listener);
        });
        let err = query_vcpu_threads(&socket, Duration::from_millis(300)).unwrap_err();
        done.send(()).unwrap();
        closer.join().unwrap();
        assert!(err.to_string().contains("no complete answer within 0.3 s"), "{err}");
        drop(pending);
    }

    #[test]
    fn silent_monitor_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let _listener = UnixListener::bind(&socket).unwrap(); // never accepts, never greets
        let err = query_vcpu_threads(&socket, Duration::from_millis(100)).unwrap_err();
        assert!(err.to_string().contains("another client"), "{err}");
    }
}
