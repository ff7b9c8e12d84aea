//! Targeting rules: a cohort's operators on the context's values, compiled
//! once (regular expressions built, versions, times and networks parsed),
//! matched per evaluation without allocating.
//!
//! Semantics follow Unleash's constraints where they overlap, so that its
//! flags import one to one: a missing attribute never matches and `negate`
//! inverts after that; a context value that does not parse for a numeric,
//! semver, time or IP operator does not match.

use std::cmp::Ordering;
use std::net::IpAddr;

use crate::clock::parse_rfc3339_millis;
use crate::config::{Operator, Rule};
use crate::context::Context;

/// The largest compiled regular expression a rule may hold.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A rule in evaluation form.
#[derive(Clone, Debug)]
pub(crate) struct CompiledRule {
    attribute: Attribute,
    matcher: Matcher,
    negate: bool,
}

/// Where the rule's value comes from.
#[derive(Clone, Debug)]
enum Attribute {
    Tenant,
    User,
    Region,
    Named(Box<str>),
}

#[derive(Clone, Debug)]
enum Matcher {
    /// `in`, case-insensitive, over a few (folded) strings.
    In(Strings),
    /// `in`, case-sensitive: the cohort lists' own set (a scan comparing
    /// words for a few names, hashed for more).
    InNames(crate::compile::NameSet),
    /// `in`, case-insensitive, over more strings than a scan is quicker
    /// for: the folded strings, hashed.
    InFolded(Box<foldhash::HashSet<Box<str>>>),
    StartsWith(Strings),
    EndsWith(Strings),
    Contains(Strings),
    Matches(Box<regex::Regex>),
    Number(Compare, f64),
    Semver(Compare, Version),
    Time(Ordering, i64),
    Cidr(Box<[Network]>),
}

/// How an ordering is tested: the value's ordering against the rule's
/// must be one of these.
#[derive(Clone, Copy, Debug)]
enum Compare {
    Eq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl Compare {
    #[inline]
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Compare::Eq => ordering == Ordering::Equal,
            Compare::Lt => ordering == Ordering::Less,
            Compare::Lte => ordering != Ordering::Greater,
            Compare::Gt => ordering == Ordering::Greater,
            Compare::Gte => ordering != Ordering::Less,
        }
    }
}

/// Strings compared as they are, or ASCII- and Unicode-case-folded.
#[derive(Clone, Debug)]
struct Strings {
    values: Box<[Box<str>]>,
    case_insensitive: bool,
    /// Whether every string is ASCII (so an ASCII value folds byte by byte).
    ascii: bool,
}

/// A semantic version of the config, parsed at compile time.
#[derive(Clone, Debug)]
pub(crate) struct Version {
    major: u64,
    minor: u64,
    patch: u64,
    /// The pre-release, without its `-` (empty for none).
    pre: Box<str>,
}

/// An IP network: its address's bits and prefix length.
#[derive(Clone, Copy, Debug)]
enum Network {
    V4(u32, u32),
    V6(u128, u32),
}

/// Why a rule does not compile: the field and the message.
pub(crate) type RuleError = (&'static str, String);

impl CompiledRule {
    /// Compiles a rule, or says which field is wrong and why.
    pub(crate) fn new(rule: &Rule) -> Result<Self, RuleError> {
        let attribute = match rule.attribute.as_str() {
            "tenant" => Attribute::Tenant,
            "user" => Attribute::User,
            "region" => Attribute::Region,
            "" => return Err(("attribute", "must not be empty".into())),
            name => Attribute::Named(name.into()),
        };
        if rule.case_insensitive && !rule.op.is_string() {
            return Err(("case_insensitive", "applies to string operators only".into()));
        }
        let matcher = match rule.op {
            Operator::In => {
                let set = strings(rule, false)?;
                if !set.case_insensitive {
                    Matcher::InNames(crate::compile::NameSet::new(&set.values))
                } else if set.values.len() > crate::compile::FEW {
                    Matcher::InFolded(Box::new(set.values.into_vec().into_iter().collect()))
                } else {
                    Matcher::In(set)
                }
            }
            Operator::StartsWith => Matcher::StartsWith(strings(rule, true)?),
            Operator::EndsWith => Matcher::EndsWith(strings(rule, true)?),
            Operator::Contains => Matcher::Contains(strings(rule, true)?),
            Operator::Matches => {
                let pattern = one(rule)?
                    .as_str()
                    .ok_or(("value", "a regular expression is a string".to_owned()))?;
                let regex = regex::RegexBuilder::new(pattern)
                    .case_insensitive(rule.case_insensitive)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| ("value", format!("not a regular expression: {e}")))?;
                Matcher::Matches(Box::new(regex))
            }
            op @ (Operator::Eq | Operator::Lt | Operator::Lte | Operator::Gt | Operator::Gte) => {
                let number = one(rule)?
                    .as_f64()
                    .filter(|n| n.is_finite())
                    .ok_or(("value", format!("{} compares numbers: give a number", name(op))))?;
                Matcher::Number(compare(op), number)
            }
            op @ (Operator::SemverEq
            | Operator::SemverLt
            | Operator::SemverLte
            | Operator::SemverGt
            | Operator::SemverGte) => {
                let text = one(rule)?
                    .as_str()
                    .ok_or(("value", "a version is a string, such as \"1.2.3\"".to_owned()))?;
                let version = semver::Version::parse(text)
                    .map_err(|e| ("value", format!("{text:?} is not a semantic version: {e}")))?;
                let version = Version {
                    major: version.major,
                    minor: version.minor,
                    patch: version.patch,
                    pre: version.pre.as_str().into(),
                };
                Matcher::Semver(compare(op), version)
            }
            op @ (Operator::Before | Operator::After) => {
                let text = one(rule)?
                    .as_str()
                    .ok_or(("value", "a time is an RFC 3339 string".to_owned()))?;
                let millis = parse_rfc3339_millis(text).map_err(|e| ("value", e))?;
                let side = if op == Operator::Before { Ordering::Less } else { Ordering::Greater };
                Matcher::Time(side, millis)
            }
            Operator::InCidr => {
                let values = rule
                    .values
                    .as_deref()
                    .filter(|v| !v.is_empty())
                    .ok_or(("values", "in_cidr takes a list of networks".to_owned()))?;
                let networks = values
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .ok_or_else(|| {
                                "a network is a string, such as \"10.0.0.0/8\"".to_owned()
                            })
                            .and_then(network)
                    })
                    .collect::<Result<Box<[Network]>, String>>()
                    .map_err(|e| ("values", e))?;
                Matcher::Cidr(networks)
            }
        };
        Ok(Self { attribute, matcher, negate: rule.negate })
    }

    /// Whether the context's value passes the rule.
    #[inline]
    pub(crate) fn matches(&self, ctx: &Context<'_>) -> bool {
        let value = match &self.attribute {
            Attribute::Tenant => ctx.get_tenant(),
            Attribute::User => ctx.get_user(),
            Attribute::Region => ctx.get_region(),
            Attribute::Named(name) => ctx.get_attr(name),
        };
        // A missing attribute never matches; negate inverts after that.
        let matched = value.is_some_and(|v| self.matcher.matches(v));
        matched != self.negate
    }
}

impl Matcher {
    #[inline]
    fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::In(set) => set.any(value, Test::Equal),
            Matcher::InNames(names) => names.contains(value),
            Matcher::InFolded(set) => {
                let mut buffer = [0u8; 256];
                match lowercase_into(value, &mut buffer) {
                    Some(lower) => set.contains(lower),
                    None => set.iter().any(|s| Test::Equal.holds_folded(value, s)),
                }
            }
            Matcher::StartsWith(set) => set.any(value, Test::Prefix),
            Matcher::EndsWith(set) => set.any(value, Test::Suffix),
            Matcher::Contains(set) => set.any(value, Test::Substring),
            Matcher::Matches(regex) => regex.is_match(value),
            Matcher::Number(compare, number) => read_number(value)
                .and_then(|v| v.partial_cmp(number))
                .is_some_and(|o| compare.holds(o)),
            Matcher::Semver(compare, version) => {
                version_cmp(value, version).is_some_and(|o| compare.holds(o))
            }
            Matcher::Time(side, at) => {
                parse_rfc3339_millis_quiet(value).is_some_and(|t| t.cmp(at) == *side)
            }
            Matcher::Cidr(networks) => value
                .trim()
                .parse::<IpAddr>()
                .is_ok_and(|ip| networks.iter().any(|n| n.contains(ip))),
        }
    }
}

/// How a string operator compares.
#[derive(Clone, Copy, Debug)]
enum Test {
    Equal,
    Prefix,
    Suffix,
    Substring,
}

impl Test {
    #[inline]
    fn holds(self, value: &str, s: &str) -> bool {
        match self {
            Test::Equal => value == s,
            Test::Prefix => value.starts_with(s),
            Test::Suffix => value.ends_with(s),
            Test::Substring => value.contains(s),
        }
    }

    /// The same test on ASCII, `value` folded as it is compared (`s` is
    /// lowercase already).
    #[inline]
    fn holds_ascii_folded(self, value: &[u8], s: &[u8]) -> bool {
        let same = |a: &[u8]| a.eq_ignore_ascii_case(s);
        match self {
            Test::Equal => same(value),
            Test::Prefix => value.get(..s.len()).is_some_and(same),
            Test::Suffix => value.len() >= s.len() && same(&value[value.len() - s.len()..]),
            Test::Substring => s.is_empty() || value.windows(s.len()).any(same),
        }
    }

    /// The same test, `value` lowercased as it is read (for values too long
    /// to lowercase into the stack buffer; `s` is lowercased already).
    fn holds_folded(self, value: &str, s: &str) -> bool {
        let prefix = |v: &str| {
            let mut folded = v.chars().flat_map(char::to_lowercase);
            s.chars().all(|c| folded.next() == Some(c))
        };
        match self {
            Test::Equal => value.chars().flat_map(char::to_lowercase).eq(s.chars()),
            Test::Prefix => prefix(value),
            Test::Suffix => {
                let mut folded = value.chars().rev().flat_map(|c| c.to_lowercase().rev());
                s.chars().rev().all(|c| folded.next() == Some(c))
            }
            Test::Substring => value.char_indices().any(|(i, _)| prefix(&value[i..])),
        }
    }
}

impl Strings {
    /// Whether the test holds for the value and any of the strings.
    #[inline]
    fn any(&self, value: &str, test: Test) -> bool {
        if !self.case_insensitive {
            return self.values.iter().any(|s| test.holds(value, s));
        }
        // Case-folded without allocating: the rule's strings were lowercased
        // when compiled. An ASCII value against ASCII strings folds byte by
        // byte in place; any other is lowercased into a stack buffer, or,
        // when longer, as it is compared.
        if self.ascii && value.is_ascii() {
            return self
                .values
                .iter()
                .any(|s| test.holds_ascii_folded(value.as_bytes(), s.as_bytes()));
        }
        let mut buffer = [0u8; 256];
        match lowercase_into(value, &mut buffer) {
            Some(lower) => self.values.iter().any(|s| test.holds(lower, s)),
            None => self.values.iter().any(|s| test.holds_folded(value, s)),
        }
    }
}

/// `value` lowercased into `buffer`, when it fits.
fn lowercase_into<'b>(value: &str, buffer: &'b mut [u8; 256]) -> Option<&'b str> {
    let mut len = 0;
    for c in value.chars().flat_map(char::to_lowercase) {
        let mut utf8 = [0u8; 4];
        let bytes = c.encode_utf8(&mut utf8).as_bytes();
        buffer.get_mut(len..len + bytes.len())?.copy_from_slice(bytes);
        len += bytes.len();
    }
    std::str::from_utf8(buffer.get(..len)?).ok()
}

/// A context's value as a number: the common case, a plain integer, read
/// in one pass; anything else by the standard parser.
#[inline]
fn read_number(value: &str) -> Option<f64> {
    let bytes = value.as_bytes();
    let (negative, digits) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        _ => (false, bytes),
    };
    if !digits.is_empty() && digits.len() <= 15 && digits.iter().all(u8::is_ascii_digit) {
        let n = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')) as f64;
        return Some(if negative { -n } else { n });
    }
    value.trim().parse::<f64>().ok().filter(|n| !n.is_nan())
}

fn one(rule: &Rule) -> Result<&serde_json::Value, RuleError> {
    match (&rule.value, rule.values.as_deref()) {
        (Some(v), None) => Ok(v),
        (None, Some([v])) => Ok(v),
        (None, None) => Err(("value", "missing: the operator compares with one value".into())),
        _ => Err(("value", "give one value, in value".into())),
    }
}

fn strings(rule: &Rule, either: bool) -> Result<Strings, RuleError> {
    let list: Vec<&serde_json::Value> = match (&rule.value, &rule.values) {
        (Some(v), None) if either => vec![v],
        (Some(_), None) => return Err(("values", "in takes a list of values".into())),
        (None, Some(vs)) => vs.iter().collect(),
        (None, None) => return Err(("values", "missing: list the values to compare with".into())),
        (Some(_), Some(_)) => return Err(("value", "give value or values, not both".into())),
    };
    if list.is_empty() {
        return Err(("values", "an empty list matches no one".into()));
    }
    let values: Box<[Box<str>]> = list
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s.clone()),
            // Numbers compare as they are written in contexts: "50".
            serde_json::Value::Number(n) => Ok(n.to_string()),
            other => Err(("values", format!("{other} is not a string"))),
        })
        .map(|s| {
            s.map(|s| {
                if rule.case_insensitive {
                    s.to_lowercase().into_boxed_str()
                } else {
                    s.into_boxed_str()
                }
            })
        })
        .collect::<Result<_, _>>()?;
    let ascii = values.iter().all(|s| s.is_ascii());
    Ok(Strings { values, case_insensitive: rule.case_insensitive, ascii })
}

fn compare(op: Operator) -> Compare {
    match op {
        Operator::Eq | Operator::SemverEq => Compare::Eq,
        Operator::Lt | Operator::SemverLt => Compare::Lt,
        Operator::Lte | Operator::SemverLte => Compare::Lte,
        Operator::Gt | Operator::SemverGt => Compare::Gt,
        _ => Compare::Gte,
    }
}

fn name(op: Operator) -> &'static str {
    match op {
        Operator::Eq => "eq",
        Operator::Lt => "lt",
        Operator::Lte => "lte",
        Operator::Gt => "gt",
        _ => "gte",
    }
}

fn parse_rfc3339_millis_quiet(value: &str) -> Option<i64> {
    crate::clock::parse_rfc3339(value).ok()
}

fn network(text: &str) -> Result<Network, String> {
    let (address, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let address: IpAddr =
        address.trim().parse().map_err(|_| format!("{text:?} is not an IP network"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix: u32 = match prefix {
        Some(p) => p
            .trim()
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{text:?}: a prefix length is 0..={max}"))?,
        None => max,
    };
    Ok(match address {
        IpAddr::V4(a) => Network::V4(u32::from(a) & mask32(prefix), prefix),
        IpAddr::V6(a) => Network::V6(u128::from(a) & mask128(prefix), prefix),
    })
}

fn mask32(prefix: u32) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) }
}

fn mask128(prefix: u32) -> u128 {
    if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) }
}

impl Network {
    #[inline]
    fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 address written as IPv6 (::ffff:10.0.0.1) is that IPv4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self, ip) {
            (Network::V4(net, prefix), IpAddr::V4(a)) => u32::from(a) & mask32(*prefix) == *net,
            (Network::V6(net, prefix), IpAddr::V6(a)) => u128::from(a) & mask128(*prefix) == *net,
            _ => false,
        }
    }
}

/// Compares a context's version (a string, parsed strictly, without
/// allocating) with the rule's, by SemVer precedence: build metadata is
/// ignored, a pre-release precedes its release, pre-release identifiers
/// compare numerically when numeric and by ASCII otherwise. `None` when
/// the value is not a semantic version.
pub(crate) fn version_cmp(value: &str, rule: &Version) -> Option<Ordering> {
    let bytes = value.as_bytes();
    // major.minor.patch, strictly: digits without a leading zero.
    let mut at = 0;
    let mut core = [0u64; 3];
    for (i, part) in core.iter_mut().enumerate() {
        let start = at;
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        let digits = &bytes[start..at];
        if digits.is_empty() || digits.len() > 19 || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        *part =
            digits.iter().fold(0u64, |n, d| n.wrapping_mul(10).wrapping_add(u64::from(d - b'0')));
        if i < 2 {
            if bytes.get(at) != Some(&b'.') {
                return None;
            }
            at += 1;
        }
    }
    let rest = &value[at..];
    let (pre, build) = match rest.as_bytes().first() {
        None => ("", None),
        Some(b'-') => match rest[1..].split_once('+') {
            Some((pre, build)) => (pre, Some(build)),
            None => (&rest[1..], None),
        },
        Some(b'+') => ("", Some(&rest[1..])),
        Some(_) => return None,
    };
    if rest.starts_with('-') && (pre.is_empty() || !pre.split('.').all(pre_identifier)) {
        return None;
    }
    // Build metadata: ignored, but must be well formed.
    if build.is_some_and(|b| b.is_empty() || !b.split('.').all(identifier)) {
        return None;
    }
    let ordering = core.cmp(&[rule.major, rule.minor, rule.patch]);
    if ordering != Ordering::Equal {
        return Some(ordering);
    }
    Some(pre_cmp(pre, &rule.pre))
}

fn identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn pre_identifier(s: &str) -> bool {
    identifier(s) && !(s.len() > 1 && s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()))
}

/// SemVer precedence of two pre-releases (empty: a release).
fn pre_cmp(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let numeric = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
                let ordering = match (numeric(x), numeric(y)) {
                    // Numerically, without parsing (no overflow): by length, then digits.
                    (true, true) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    (false, false) => x.cmp(y),
                };
                if ordering != Ordering::Equal {
                    return ordering;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        let p = semver::Version::parse(text).expect("semver");
        Version { major: p.major, minor: p.minor, patch: p.patch, pre: p.pre.as_str().into() }
    }

    #[test]
    fn versions_compare_by_semver_precedence_as_the_semver_crate_does() {
        let versions = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.2.3",
            "1.10.0",
            "2.0.0-0",
            "2.0.0",
            "10.0.0",
            "1.0.0-x.7.z.92",
            "1.0.0-a-b",
            "1.0.0-999999999999999999999",
        ];
        for a in versions {
            for b in versions {
                let expected = semver::Version::parse(a)
                    .expect("a")
                    .cmp_precedence(&semver::Version::parse(b).expect("b"));
                assert_eq!(version_cmp(a, &v(b)), Some(expected), "{a} vs {b}");
            }
        }
        assert_eq!(version_cmp("1.2.3+build.7", &v("1.2.3")), Some(Ordering::Equal));
        for bad in
            ["v1.2.3", "1.2", "1.2.3.4", "01.2.3", "1.2.3-", "1.2.3-01", "1.2.3+", "", "1.2.x"]
        {
            assert_eq!(version_cmp(bad, &v("1.2.3")), None, "{bad}");
        }
    }

    #[test]
    fn networks_hold_their_addresses() {
        let net = |s| network(s).expect("network");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(net("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:1::5")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(net("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        assert!(net("192.168.1.7").contains(ip("192.168.1.7")));
        assert!(net("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(network("10.0.0.0/33").is_err() && network("nope").is_err());
    }
}
