//! vCPU threads from a QMP monitor socket the operator configured (Kata's
//! `extra_monitor_socket = "qmp"`, say): connect, ask `query-cpus-fast`, close.
//!
//! A QEMU chardev serves one client at a time, so the connection is kept as short as the
//! exchange and every read has a deadline: a monitor in use by someone else times out
//! instead of blocking the agent.

use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

fn qmp_error(socket: &Path, reason: impl Into<String>) -> Error {
    Error::Qmp { socket: socket.to_path_buf(), reason: reason.into() }
}

struct Monitor<'a> {
    socket: &'a Path,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl<'a> Monitor<'a> {
    fn connect(socket: &'a Path, timeout: Duration) -> Result<Monitor<'a>> {
        let stream = UnixStream::connect(socket).map_err(|e| qmp_error(socket, e.to_string()))?;
        for set in [UnixStream::set_read_timeout, UnixStream::set_write_timeout] {
            set(&stream, Some(timeout)).map_err(|e| qmp_error(socket, e.to_string()))?;
        }
        let writer = stream.try_clone().map_err(|e| qmp_error(socket, e.to_string()))?;
        let mut monitor = Monitor { socket, reader: BufReader::new(stream), writer };
        let greeting = monitor.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(qmp_error(socket, format!("expected the QMP greeting, got {greeting}")));
        }
        monitor.execute("qmp_capabilities")?;
        Ok(monitor)
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        let read = self.reader.read_line(&mut line).map_err(|e| {
            let busy =
                matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
            let hint = if busy { " (no answer in time: is another client connected?)" } else { "" };
            qmp_error(self.socket, format!("{e}{hint}"))
        })?;
        if read == 0 {
            return Err(qmp_error(self.socket, "the monitor closed the connection"));
        }
        serde_json::from_str(&line)
            .map_err(|e| qmp_error(self.socket, format!("not JSON ({e}): {:?}", line.trim())))
    }

    /// Run one command; asynchronous events that arrive meanwhile are passed over.
    fn execute(&mut self, command: &str) -> Result<Value> {
        let request = format!("{{\"execute\": \"{command}\"}}\n");
        self.writer
            .write_all(request.as_bytes())
            .map_err(|e| qmp_error(self.socket, e.to_string()))?;
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

/// vCPU index → thread id from `query-cpus-fast` (`cpu-index`, `thread-id`).
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

    #[test]
    fn silent_monitor_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let _listener = UnixListener::bind(&socket).unwrap(); // never accepts, never greets
        let err = query_vcpu_threads(&socket, Duration::from_millis(100)).unwrap_err();
        assert!(err.to_string().contains("another client"), "{err}");
    }
}
