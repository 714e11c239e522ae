//! Container logs: the 8-byte frame demultiplexer and line splitting, with
//! stdout and stderr kept in the order the engine recorded them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harness_core::{OutputLine, OutputStream};
use http::Method;

use crate::client::{Docker, DrivenBody, empty_body, enc, query};
use crate::error::Result;

/// Longest line kept; the rest of a longer line is dropped and the line marked truncated.
pub const MAX_LINE: usize = 64 * 1024;

/// Which logs to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new output until the container stops.
    pub follow: bool,
    /// Only output recorded at or after this time (nanosecond precision).
    pub since: Option<SystemTime>,
    /// Only the last N lines (all when `None`).
    pub tail: Option<u64>,
    /// Prefix each line with the engine's RFC 3339 timestamp (split off into [`LogLine::timestamp`]).
    pub timestamps: bool,
}

/// One line of container output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The engine's timestamp (RFC 3339), when asked for.
    pub timestamp: Option<String>,
    /// The line.
    pub line: OutputLine,
}

/// Parses the engine's log timestamps (RFC 3339 in UTC, e.g.
/// `2024-05-01T12:00:00.123456789Z`) to a time.
pub fn parse_timestamp(ts: &str) -> Option<SystemTime> {
    let b = ts.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let rest = ts.get(19..)?;
    let (frac, zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            (&r[..n], &r[n..])
        }
        None => ("", rest),
    };
    if zone != "Z" || frac.len() > 9 {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    // Days from the civil date (proleptic Gregorian), after H. Hinnant.
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Splits the engine's multiplexed stream (8-byte headers: stream, 0, 0, 0,
/// big-endian length) into its frames, bytes as they are: what an attached exec
/// writes to stdout and stderr. A pure state machine.
#[derive(Debug, Default)]
pub struct Frames {
    raw: Vec<u8>,
    tty: bool,
}

impl Frames {
    /// A splitter; `tty` when the stream has a TTY (no frames, all stdout).
    pub fn new(tty: bool) -> Frames {
        Frames {
            raw: Vec::new(),
            tty,
        }
    }

    /// Feeds bytes; returns the payloads of the frames completed by them, in order.
    pub fn push(&mut self, data: &[u8]) -> Vec<(OutputStream, Vec<u8>)> {
        if self.tty {
            return vec![(OutputStream::Stdout, data.to_vec())];
        }
        self.raw.extend_from_slice(data);
        let mut out = Vec::new();
        let mut at = 0;
        while self.raw.len() - at >= 8 {
            let h = &self.raw[at..at + 8];
            let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
            if self.raw.len() - at - 8 < len {
                break;
            }
            let stream = if h[0] == 2 {
                OutputStream::Stderr
            } else {
                OutputStream::Stdout
            };
            out.push((stream, self.raw[at + 8..at + 8 + len].to_vec()));
            at += 8 + len;
        }
        self.raw.drain(..at);
        out
    }
}

/// Splits the engine's multiplexed stream (see [`Frames`]) into lines, in
/// arrival order. A pure state machine.
#[derive(Debug, Default)]
pub struct Demuxer {
    frames: Frames,
    timestamps: bool,
    partial: [Vec<u8>; 2],
    truncated: [bool; 2],
}

impl Demuxer {
    /// A demuxer; `tty` when the container has a TTY (no frames, all stdout).
    pub fn new(tty: bool, timestamps: bool) -> Demuxer {
        Demuxer {
            frames: Frames::new(tty),
            timestamps,
            ..Demuxer::default()
        }
    }

    /// Feeds bytes; returns the lines completed by them.
    pub fn push(&mut self, data: &[u8]) -> Vec<LogLine> {
        let mut out = Vec::new();
        for (stream, payload) in self.frames.push(data) {
            self.feed(stream, &payload, &mut out);
        }
        out
    }

    /// Ends the input; returns unterminated last lines.
    pub fn finish(&mut self) -> Vec<LogLine> {
        let mut out = Vec::new();
        for (i, stream) in [OutputStream::Stdout, OutputStream::Stderr]
            .into_iter()
            .enumerate()
        {
            if !self.partial[i].is_empty() || self.truncated[i] {
                let bytes = std::mem::take(&mut self.partial[i]);
                let t = std::mem::take(&mut self.truncated[i]);
                out.push(self.line(stream, bytes, t));
            }
        }
        out
    }

    fn feed(&mut self, stream: OutputStream, data: &[u8], out: &mut Vec<LogLine>) {
        let i = stream as usize;
        for chunk in data.split_inclusive(|&b| b == b'\n') {
            let (body, ends) = match chunk.strip_suffix(b"\n") {
                Some(b) => (b, true),
                None => (chunk, false),
            };
            let room = MAX_LINE.saturating_sub(self.partial[i].len());
            if body.len() > room {
                self.partial[i].extend_from_slice(&body[..room]);
                self.truncated[i] = true;
            } else {
                self.partial[i].extend_from_slice(body);
            }
            if ends {
                let mut bytes = std::mem::take(&mut self.partial[i]);
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
                let t = std::mem::take(&mut self.truncated[i]);
                out.push(self.line(stream, bytes, t));
            }
        }
    }

    fn line(&self, stream: OutputStream, mut bytes: Vec<u8>, truncated: bool) -> LogLine {
        let mut timestamp = None;
        if self.timestamps
            && let Some(sp) = bytes.iter().position(|&b| b == b' ')
        {
            timestamp = Some(String::from_utf8_lossy(&bytes[..sp]).into_owned());
            bytes.drain(..=sp);
        }
        LogLine {
            timestamp,
            line: OutputLine {
                stream,
                bytes,
                truncated,
            },
        }
    }
}

/// A stream of log lines of one container.
pub struct LogStream {
    body: Option<DrivenBody>,
    demux: Demuxer,
    ready: std::collections::VecDeque<LogLine>,
}

impl LogStream {
    /// The next line; `None` when the logs end (container stopped when following).
    pub async fn next(&mut self) -> Option<Result<LogLine>> {
        loop {
            if let Some(l) = self.ready.pop_front() {
                return Some(Ok(l));
            }
            let body = self.body.as_mut()?;
            match body.chunk().await {
                Some(Ok(c)) => self.ready.extend(self.demux.push(&c)),
                Some(Err(e)) => {
                    self.body = None;
                    return Some(Err(e));
                }
                None => {
                    self.body = None;
                    self.ready.extend(self.demux.finish());
                }
            }
        }
    }

    /// Reads every line to the end.
    pub async fn collect(mut self) -> Result<Vec<LogLine>> {
        let mut v = Vec::new();
        while let Some(l) = self.next().await {
            v.push(l?);
        }
        Ok(v)
    }
}

impl Docker {
    /// Reads (or follows) a container's stdout and stderr, demultiplexed into
    /// lines in the order the engine recorded them.
    pub async fn logs(&self, id: &str, opts: &LogOptions) -> Result<LogStream> {
        let tty = self.inspect_container(id).await?.config.tty;
        let mut q = vec![
            ("stdout", "true".to_owned()),
            ("stderr", "true".to_owned()),
            ("follow", opts.follow.to_string()),
            ("timestamps", opts.timestamps.to_string()),
        ];
        if let Some(s) = opts.since {
            let d = s.duration_since(UNIX_EPOCH).unwrap_or_default();
            q.push(("since", format!("{}.{:09}", d.as_secs(), d.subsec_nanos())));
        }
        if let Some(t) = opts.tail {
            q.push(("tail", t.to_string()));
        }
        let path = format!("/containers/{}/logs{}", enc(id), query(&q));
        let body = self
            .call(Method::GET, &path, empty_body(), &format!("container {id}"))
            .await?;
        Ok(LogStream {
            body: Some(body),
            demux: Demuxer::new(tty, opts.timestamps),
            ready: Default::default(),
        })
    }

    pub(crate) fn log_stream(body: DrivenBody, tty: bool) -> LogStream {
        LogStream {
            body: Some(body),
            demux: Demuxer::new(tty, false),
            ready: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![stream, 0, 0, 0];
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    fn texts(lines: &[LogLine]) -> Vec<(OutputStream, String)> {
        lines
            .iter()
            .map(|l| (l.line.stream, l.line.text().into_owned()))
            .collect()
    }

    #[test]
    fn demuxes_in_order_across_split_frames() {
        let mut all = frame(1, b"out1\nout");
        all.extend(frame(2, b"err1\n"));
        all.extend(frame(1, b"2\n"));
        all.extend(frame(2, b"tail"));
        let mut d = Demuxer::new(false, false);
        let mut got = Vec::new();
        // Feed one byte at a time: headers and payloads split anywhere.
        for b in &all {
            got.extend(d.push(std::slice::from_ref(b)));
        }
        got.extend(d.finish());
        use OutputStream::*;
        assert_eq!(
            texts(&got),
            vec![
                (Stdout, "out1".into()),
                (Stderr, "err1".into()),
                (Stdout, "out2".into()),
                (Stderr, "tail".into()),
            ]
        );
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let alphabet: Vec<char> = "0123456789-T:.Z \u{e9}\u{1F600}x\n".chars().collect();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let len = rng.usize(0..40);
            let s: String = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let _ = parse_timestamp(&s);
            let bytes: Vec<u8> = (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect();
            let mut d = Demuxer::new(rng.bool(), rng.bool());
            let _ = d.push(&bytes);
            let _ = d.finish();
        }
    }

    #[test]
    fn parses_engine_timestamps() {
        let t = parse_timestamp("2024-03-01T12:34:56.000000789Z").unwrap();
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_709_296_496);
        assert_eq!(d.subsec_nanos(), 789);
        let t = parse_timestamp("1970-01-01T00:00:00Z").unwrap();
        assert_eq!(t, UNIX_EPOCH);
        assert_eq!(
            parse_timestamp("2000-02-29T00:00:00.5Z")
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap(),
            Duration::new(951_782_400, 500_000_000)
        );
        for bad in [
            "2024-01-01T00:00:00éZ",
            "2024-01-01T00:00:0é",
            "",
            "2024-13-01T00:00:00Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00+01:00",
            "x",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn splits_timestamps_and_truncates_long_lines() {
        let mut d = Demuxer::new(false, true);
        let got = d.push(&frame(1, b"2024-01-01T00:00:00.000000000Z hello world\n"));
        assert_eq!(
            got[0].timestamp.as_deref(),
            Some("2024-01-01T00:00:00.000000000Z")
        );
        assert_eq!(got[0].line.text(), "hello world");

        let mut d = Demuxer::new(true, false);
        let long = vec![b'x'; MAX_LINE + 10];
        let mut got = d.push(&long);
        got.extend(d.push(b"\nnext\n"));
        assert_eq!(got.len(), 2);
        assert!(got[0].line.truncated);
        assert_eq!(got[0].line.bytes.len(), MAX_LINE);
        assert_eq!(got[1].line.text(), "next");
    }
}
