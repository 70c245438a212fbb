//! A streaming, allocation-free parser for the HTTP/1.1 responses of `docs/contract.md` §5.
//!
//! A response can arrive split at any byte, and a connection cannot keep a copy of a partial
//! head (100,000 connections × 8 KiB would be 800 MB). So the parser is a byte-driven state
//! machine whose whole state is a few dozen bytes: it consumes what it is given, remembers only
//! the facts it needs (status, `Content-Length`, `Connection`), and skips the body by counting.
//!
//! It accepts exactly what the contract promises and counts anything else as bad HTTP:
//! `HTTP/1.x NNN reason`, header lines `name: value` with CRLF line ends (other headers, such as
//! nginx's `Server` and `Date`, are checked for syntax and ignored), a `Content-Length`
//! (required, digits only, once), `Connection: close` or `keep-alive`, and no
//! `Transfer-Encoding` (chunked framing is outside the contract).

/// The largest response head accepted, as the servers' own request limit (`MAX_HEAD`).
pub const MAX_HEAD: u32 = 8 * 1024;

/// Why a response was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    /// Not `HTTP/1.x NNN reason`.
    StatusLine,
    /// A header line that is not `token: value` with CRLF.
    HeaderSyntax,
    /// A missing, repeated or non-numeric `Content-Length`, or any `Transfer-Encoding`.
    Framing,
    /// `Connection` other than `close` or `keep-alive`.
    Connection,
    /// A head over [`MAX_HEAD`].
    TooLarge,
}

/// What one call to [`Response::feed`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The response is not complete yet; every byte given was consumed.
    More,
    /// The response ended after `used` of the bytes given.
    Done { used: usize },
}

/// Where the parser is. Each state names what the next byte may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum St {
    /// Matching `HTTP/1.` one byte at a time (the byte index is in `pos`).
    #[default]
    Version,
    /// The minor version digit.
    Minor,
    /// The space after the version.
    VersionSp,
    /// Three status digits (`pos` counts them).
    Status,
    /// The space after the status.
    StatusSp,
    /// The reason phrase, up to CR.
    Reason,
    /// LF after a line's CR.
    LineLf,
    /// The start of a line in the head: a header name, or CR for the empty line.
    LineStart,
    /// Inside a header name.
    Name,
    /// Spaces before a value.
    ValueWs,
    /// Inside a value.
    Value,
    /// LF after the empty line's CR: the head ends.
    HeadLf,
    /// Counting body bytes.
    Body,
}

/// The headers whose value matters; all others are only syntax-checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum Header {
    #[default]
    Other,
    ContentLength,
    Connection,
    TransferEncoding,
}

/// The parsing state of one response; reset with [`Response::reset`] before the next.
#[derive(Clone, Debug, Default)]
pub struct Response {
    st: St,
    pos: u8,
    /// The status code, once read.
    pub status: u16,
    /// Whether the server said `Connection: close` (it will close after this response).
    pub close: bool,
    content_length: Option<u64>,
    body_left: u64,
    head_len: u32,
    header: Header,
    /// The current header's name, lowercased, while it may still be one of ours.
    name: [u8; 17],
    name_len: u8,
    /// The current value of an interesting header, lowercased, trailing spaces trimmed at its
    /// end; longer values than this are not ones the contract sends.
    value: [u8; 20],
    value_len: u8,
    value_trimmed: u8,
}

const VERSION: &[u8] = b"HTTP/1.";

/// Byte classes, looked up in one table instead of tested by ranges: the head of every
/// response goes through here byte by byte, so this is the parser's inner loop.
const TCHAR: u8 = 1;
const FIELD: u8 = 2;
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        // RFC 9110 `tchar`: the bytes allowed in a header name.
        let tchar = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        // Bytes allowed inside a value or a reason phrase: visible ASCII, space, tab, obs-text.
        let field = c == b'\t' || c == b' ' || (c >= 0x21 && c <= 0x7e) || c >= 0x80;
        t[b] = (if tchar { TCHAR } else { 0 }) | (if field { FIELD } else { 0 });
        b += 1;
    }
    t
};

fn is_tchar(b: u8) -> bool {
    CLASS[b as usize] & TCHAR != 0
}

fn is_field_byte(b: u8) -> bool {
    CLASS[b as usize] & FIELD != 0
}

impl Response {
    /// Ready for the next response on the same connection.
    pub fn reset(&mut self) {
        *self = Response::default();
    }

    /// Consumes bytes of the response. `Done` carries how many bytes of `input` belonged to it;
    /// anything after that is not part of this response.
    pub fn feed(&mut self, input: &[u8]) -> Result<Parsed, Bad> {
        let mut i = 0;
        while i < input.len() {
            if self.st == St::Body {
                // The body is skipped by counting: no per-byte work.
                let take = (input.len() - i).min(self.body_left.min(usize::MAX as u64) as usize);
                self.body_left -= take as u64;
                i += take;
                if self.body_left == 0 {
                    return Ok(Parsed::Done { used: i });
                }
                continue;
            }
            // Fast path: a reason phrase or the value of a header we ignore (nginx's `Date`,
            // `Server`, …) only needs its bytes checked, up to the CR that ends it.
            if self.st == St::Reason || (self.st == St::Value && self.header == Header::Other) {
                let run = input[i..]
                    .iter()
                    .take_while(|&&b| b != b'\r' && is_field_byte(b))
                    .count();
                i += run;
                self.head_len += run as u32;
                if self.head_len > MAX_HEAD {
                    return Err(Bad::TooLarge);
                }
                if i == input.len() {
                    break;
                }
            }
            let b = input[i];
            i += 1;
            self.head_len += 1;
            if self.head_len > MAX_HEAD {
                return Err(Bad::TooLarge);
            }
            if self.head_byte(b)? {
                // The empty line ended the head.
                match self.content_length {
                    Some(0) => return Ok(Parsed::Done { used: i }),
                    Some(n) => {
                        self.body_left = n;
                        self.st = St::Body;
                    }
                    None => return Err(Bad::Framing),
                }
            }
        }
        Ok(Parsed::More)
    }

    /// One byte of the head. Returns true when it was the LF that ends the head.
    fn head_byte(&mut self, b: u8) -> Result<bool, Bad> {
        match self.st {
            St::Version => {
                if b != VERSION[self.pos as usize] {
                    return Err(Bad::StatusLine);
                }
                self.pos += 1;
                if self.pos as usize == VERSION.len() {
                    self.st = St::Minor;
                }
            }
            St::Minor if b.is_ascii_digit() => self.st = St::VersionSp,
            St::VersionSp if b == b' ' => {
                self.st = St::Status;
                self.pos = 0;
            }
            St::Status if b.is_ascii_digit() => {
                self.status = self.status * 10 + u16::from(b - b'0');
                self.pos += 1;
                if self.pos == 3 {
                    self.st = St::StatusSp;
                }
            }
            St::StatusSp if b == b' ' => self.st = St::Reason,
            St::Reason if b == b'\r' => self.st = St::LineLf,
            St::Reason if is_field_byte(b) => {}
            St::Minor | St::VersionSp | St::Status | St::StatusSp | St::Reason => {
                return Err(Bad::StatusLine);
            }
            St::LineLf if b == b'\n' => self.st = St::LineStart,
            St::LineStart if b == b'\r' => self.st = St::HeadLf,
            St::LineStart if is_tchar(b) => {
                self.st = St::Name;
                self.name_len = 0;
                self.name_byte(b);
            }
            St::Name if is_tchar(b) => self.name_byte(b),
            St::Name if b == b':' => {
                self.header = self.which_header();
                self.value_len = 0;
                self.value_trimmed = 0;
                self.st = St::ValueWs;
            }
            St::ValueWs if b == b' ' || b == b'\t' => {}
            St::ValueWs | St::Value if b == b'\r' => {
                self.end_header()?;
                self.st = St::LineLf;
            }
            St::ValueWs | St::Value if is_field_byte(b) => {
                self.st = St::Value;
                self.value_byte(b)?;
            }
            St::HeadLf if b == b'\n' => return Ok(true),
            // A bare LF, a CR not followed by LF, obs-fold (a line starting with a space), a
            // control byte: none of it is what the contract's servers send.
            St::LineLf | St::LineStart | St::Name | St::ValueWs | St::Value | St::HeadLf => {
                return Err(Bad::HeaderSyntax);
            }
            St::Body => unreachable!("the body is consumed in feed"),
        }
        Ok(false)
    }

    fn name_byte(&mut self, b: u8) {
        // Names longer than the buffer cannot be one of ours; remember only that.
        if (self.name_len as usize) < self.name.len() {
            self.name[self.name_len as usize] = b.to_ascii_lowercase();
        }
        self.name_len = self.name_len.saturating_add(1);
    }

    fn which_header(&self) -> Header {
        match self.name.get(..self.name_len as usize) {
            Some(b"content-length") => Header::ContentLength,
            Some(b"connection") => Header::Connection,
            Some(b"transfer-encoding") => Header::TransferEncoding,
            _ => Header::Other,
        }
    }

    fn value_byte(&mut self, b: u8) -> Result<(), Bad> {
        if self.header == Header::Other {
            return Ok(());
        }
        let Some(slot) = self.value.get_mut(self.value_len as usize) else {
            return Err(match self.header {
                Header::Connection => Bad::Connection,
                _ => Bad::Framing,
            });
        };
        *slot = b.to_ascii_lowercase();
        self.value_len += 1;
        if b != b' ' && b != b'\t' {
            self.value_trimmed = self.value_len;
        }
        Ok(())
    }

    fn end_header(&mut self) -> Result<(), Bad> {
        let value = &self.value[..self.value_trimmed as usize];
        match self.header {
            Header::Other => {}
            Header::TransferEncoding => return Err(Bad::Framing),
            Header::ContentLength => {
                if self.content_length.is_some()
                    || value.is_empty()
                    || !value.iter().all(u8::is_ascii_digit)
                {
                    return Err(Bad::Framing);
                }
                // At most 20 digits fit the buffer; u64 holds 19 for sure.
                let n = value
                    .iter()
                    .try_fold(0u64, |n, d| {
                        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                    })
                    .ok_or(Bad::Framing)?;
                self.content_length = Some(n);
            }
            Header::Connection => match value {
                b"close" => self.close = true,
                b"keep-alive" => {}
                _ => return Err(Bad::Connection),
            },
        }
        self.header = Header::Other;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, world!\n";
    const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: close\r\n\r\nHello, world!\n";
    const NGINX: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.26.3\r\nDate: Sat, 22 Nov 2025 15:45:00 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok";

    fn parse_whole(r: &[u8]) -> Result<(Response, usize), Bad> {
        let mut p = Response::default();
        match p.feed(r)? {
            Parsed::Done { used } => Ok((p, used)),
            Parsed::More => panic!("incomplete: {:?}", String::from_utf8_lossy(r)),
        }
    }

    #[test]
    fn the_contracts_responses_and_nginxs_parse() {
        let (p, used) = parse_whole(OURS).unwrap();
        assert_eq!((p.status, p.close, used), (200, false, OURS.len()));
        let (p, _) = parse_whole(CLOSE).unwrap();
        assert!(p.close);
        let (p, used) = parse_whole(NGINX).unwrap();
        assert_eq!((p.status, p.close, used), (200, false, NGINX.len()));
        let (p, _) = parse_whole(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(p.status, 404);
        // The servers' own response bytes.
        use server_common::responses::{OK_CLOSE, OK_KEEP_ALIVE, OK_KEEP_ALIVE_10};
        for (r, close) in [
            (OK_KEEP_ALIVE, false),
            (OK_KEEP_ALIVE_10, false),
            (OK_CLOSE, true),
        ] {
            let (p, used) = parse_whole(r).unwrap();
            assert_eq!((p.status, p.close, used), (200, close, r.len()));
        }
    }

    /// Every response split at every byte boundary — and fed one byte at a time — parses to the
    /// same result and ends exactly at its last byte.
    #[test]
    fn split_at_every_byte_boundary() {
        for r in [OURS, CLOSE, NGINX] {
            for cut in 0..=r.len() {
                let mut p = Response::default();
                let first = p.feed(&r[..cut]).unwrap();
                if cut < r.len() {
                    assert_eq!(first, Parsed::More, "cut {cut}");
                    assert_eq!(
                        p.feed(&r[cut..]).unwrap(),
                        Parsed::Done {
                            used: r.len() - cut
                        }
                    );
                } else {
                    assert_eq!(first, Parsed::Done { used: r.len() });
                }
                assert_eq!(p.status, 200);
            }
            let mut p = Response::default();
            for (i, b) in r.iter().enumerate() {
                let got = p.feed(std::slice::from_ref(b)).unwrap();
                let want = if i + 1 == r.len() {
                    Parsed::Done { used: 1 }
                } else {
                    Parsed::More
                };
                assert_eq!(got, want, "byte {i}");
            }
        }
    }

    #[test]
    fn bytes_after_the_response_are_not_consumed() {
        let mut two = OURS.to_vec();
        two.extend_from_slice(OURS);
        let mut p = Response::default();
        assert_eq!(p.feed(&two).unwrap(), Parsed::Done { used: OURS.len() });
        p.reset();
        assert_eq!(
            p.feed(&two[OURS.len()..]).unwrap(),
            Parsed::Done { used: OURS.len() }
        );
    }

    #[test]
    fn anything_outside_the_contract_is_bad() {
        let cases: &[(&[u8], Bad)] = &[
            (b"HTTP/2 200 OK\r\n", Bad::StatusLine),
            (b"HTTP/1.1 20 OK\r\n", Bad::StatusLine),
            (b"HTTP/1.1 200OK\r\n", Bad::StatusLine),
            (b"http/1.1 200 OK\r\n", Bad::StatusLine),
            (b"garbage\r\n\r\n", Bad::StatusLine),
            (
                b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
                Bad::StatusLine,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n",
                Bad::HeaderSyntax,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\r\n",
                Bad::HeaderSyntax,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length 0\r\n\r\n",
                Bad::HeaderSyntax,
            ),
            (b"HTTP/1.1 200 OK\r\n folded\r\n\r\n", Bad::HeaderSyntax),
            (b"HTTP/1.1 200 OK\r\nA: b\x01\r\n\r\n", Bad::HeaderSyntax),
            (b"HTTP/1.1 200 OK\r\n\r\n", Bad::Framing),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                Bad::Framing,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                Bad::Framing,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                Bad::Framing,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Bad::Framing,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: upgrade\r\n\r\n",
                Bad::Connection,
            ),
        ];
        for (r, want) in cases {
            let mut p = Response::default();
            assert_eq!(p.feed(r), Err(*want), "{:?}", String::from_utf8_lossy(r));
        }
        let mut huge = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        huge.resize(MAX_HEAD as usize + 10, b'a');
        assert_eq!(Response::default().feed(&huge), Err(Bad::TooLarge));
    }

    #[test]
    fn header_names_and_values_are_case_insensitive_and_trimmed() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-LENGTH:\t3  \r\nCONNECTION:  Close \r\n\r\nabc";
        let (p, used) = parse_whole(r).unwrap();
        assert_eq!((p.close, used), (true, r.len()));
    }
}
