//! A sans-IO reader of server-sent events (the WHATWG `text/event-stream` format): feed it the
//! bytes as they arrive, take out whole events.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// `event:` (empty for the default `message`).
    pub event: String,
    /// `data:` lines joined with `\n`.
    pub data: String,
    /// `id:`, if the event set one.
    pub id: Option<String>,
}

/// The longest line accepted; a longer one means the peer is not an event stream.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// Buffers bytes and yields events.
#[derive(Debug, Default)]
pub struct SseReader {
    buf: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

/// The stream is not an event stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event stream line is longer than {MAX_LINE} bytes")]
pub struct LineTooLong;

impl SseReader {
    /// Adds bytes; returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b == b'\n' || b == b'\r' {
                // A `\r` at the very end may be the first half of `\r\n`: wait for more.
                if b == b'\r' && i + 1 == self.buf.len() {
                    break;
                }
                let line = String::from_utf8_lossy(&self.buf[start..i]).into_owned();
                self.line(&line, &mut out);
                i += if b == b'\r' && self.buf.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            } else {
                i += 1;
            }
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            return Err(LineTooLong);
        }
        Ok(out)
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                out.push(std::mem::take(&mut self.current));
            } else {
                self.current = SseEvent::default();
            }
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.current.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.current.id = Some(value.to_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn events_split_across_chunks_and_line_endings() {
        let mut r = SseReader::default();
        assert!(r.push(b": keep-alive\n\nevent: revo").unwrap().is_empty());
        assert!(r.push(b"cation\r").unwrap().is_empty());
        let got = r.push(b"\nid: 7\r\ndata: {\"a\":\ndata: 1}\n\n").unwrap();
        assert_eq!(
            got,
            [SseEvent {
                event: "revocation".into(),
                data: "{\"a\":\n1}".into(),
                id: Some("7".into()),
            }]
        );
        // A trailing `\r` may be half of `\r\n`: the reader waits for the next byte.
        assert!(r.push(b"event: ready\rdata: x\r\r").unwrap().is_empty());
        let got = r.push(b"\n").unwrap();
        assert_eq!(got[0].event, "ready");
        assert_eq!(got[0].id, None);
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        let mut r = SseReader::default();
        assert!(r.push(b"event: x\nid: 3\n\n").unwrap().is_empty());
        assert_eq!(r.push(b"data: y\n\n").unwrap()[0].event, "");
    }
}
