//! The host of a proxy request as a client's resolver reads it. A host whose last label is
//! a number is an IPv4 address in one of the forms `inet_aton` and the WHATWG URL standard
//! accept (decimal, `0x` hex, `0` octal; one to four parts: `3405803802`, `0xcb00711a`,
//! `0313.0.0161.032`, `203.113`, `0`; a trailing dot allowed), or it is malformed. Either way
//! it never goes to DNS as a name: the rules match addresses, so the proxy decides on the
//! address it stands for, at once. A trailing dot on a name leaves a name.

use std::net::Ipv4Addr;

use crate::proxy::refusal::Refusal;

/// What a request's host is.
#[derive(Debug, PartialEq, Eq)]
pub enum Host {
    /// A name (or an IPv6 literal in brackets), as written.
    Name,
    /// An IPv4 address, in whichever form it was written.
    V4(Ipv4Addr),
}

/// Reads `host` (a URL's or a CONNECT target's, without the port). `Err` for a host that
/// ends in a number but is no IPv4 address (`1.2.3.256`, `08`, `1.2.3.4.5`, `99999999999`):
/// browsers refuse such a URL too.
pub fn parse(host: &str) -> Result<Host, &'static str> {
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    let parts: Vec<&str> = trimmed.split('.').collect();
    let last = parts.last().copied().unwrap_or_default();
    let ends_in_number =
        !last.is_empty() && (last.bytes().all(|b| b.is_ascii_digit()) || number(last).is_some());
    if !ends_in_number {
        return Ok(Host::Name);
    }
    const MALFORMED: &str = "the host ends in a number but is no IPv4 address";
    if parts.len() > 4 {
        return Err(MALFORMED);
    }
    let numbers: Vec<u64> = parts
        .iter()
        .map(|part| number(part))
        .collect::<Option<_>>()
        .ok_or(MALFORMED)?;
    let (last, leading) = numbers.split_last().ok_or(MALFORMED)?;
    if leading.iter().any(|n| *n > 255) {
        return Err(MALFORMED);
    }
    // The last part fills the bytes the others leave: 32 bits alone, 24 after one, ...
    let room = 8 * (5 - numbers.len() as u32);
    if *last >= 1u64 << room {
        return Err(MALFORMED);
    }
    let value = leading
        .iter()
        .enumerate()
        .fold(*last, |acc, (i, n)| acc | (n << (24 - 8 * i as u32)));
    Ok(Host::V4(Ipv4Addr::from(
        u32::try_from(value).map_err(|_| MALFORMED)?,
    )))
}

/// `host` as the rules and the connection see it: a numeric IPv4 form as its dotted
/// address, anything else as written; a malformed one is a bad request.
pub(crate) fn canonical(host: &str) -> Result<String, (Refusal, Option<String>)> {
    match parse(host) {
        Ok(Host::V4(v4)) => Ok(v4.to_string()),
        Ok(Host::Name) => Ok(host.to_owned()),
        Err(why) => Err((Refusal::BadRequest(why), None)),
    }
}

/// One part: `0x` hex (`0x` alone is 0), `0` octal, or decimal; at most 32 bits.
fn number(part: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            if hex.is_empty() {
                return Some(0);
            }
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    // from_str_radix takes a sign; a part has none.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, radix)
        .ok()
        .filter(|n| *n <= u64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Host {
        Host::V4(s.parse().unwrap())
    }

    #[test]
    fn numeric_forms_are_the_addresses_they_stand_for() {
        for (host, addr) in [
            ("3405803802", "203.0.113.26"),
            ("0xcb00711a", "203.0.113.26"),
            ("0XCB00711A", "203.0.113.26"),
            ("0313.0.0161.032", "203.0.113.26"),
            ("0xcb.0x0.0x71.0x1a", "203.0.113.26"),
            ("203.113", "203.0.0.113"),
            ("203.0.29466", "203.0.115.26"),
            ("203.7405850", "203.113.1.26"),
            ("0", "0.0.0.0"),
            ("0x", "0.0.0.0"),
            ("00", "0.0.0.0"),
            ("203.0.113.26", "203.0.113.26"),
            ("203.0.113.26.", "203.0.113.26"),
            ("3405803802.", "203.0.113.26"),
            ("4294967295", "255.255.255.255"),
            ("127.1", "127.0.0.1"),
        ] {
            assert_eq!(parse(host), Ok(v4(addr)), "{host}");
        }
    }

    #[test]
    fn hosts_that_end_in_a_number_but_are_no_address_are_malformed() {
        for host in [
            "4294967296",
            "99999999999999999999",
            "1.2.3.256",
            "256.1.2.3",
            "1.2.65536",
            "1.16777216",
            "1.2.3.4.5",
            "08",
            "1.2.3.09",
            "0x1g.2",
            "1..2",
            ".1",
            "example.com.1",
        ] {
            assert!(parse(host).is_err(), "{host}");
        }
    }

    #[test]
    fn names_stay_names() {
        for host in [
            "www.example.com",
            "www.example.com.",
            "1.2.3.4.nip.io",
            "0xg",
            "1e3",
            "example.0xg",
            "[2001:db8::1]",
            "",
            ".",
            "+1",
        ] {
            assert_eq!(parse(host), Ok(Host::Name), "{host}");
        }
    }
}
