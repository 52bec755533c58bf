//! Masking of sensitive data in chat before anything is relayed or stored: card numbers (Luhn
//! checked), US social security numbers and IBANs (mod-97 checked). Which rules apply is set per
//! portal in `custos.toml` (`redact = ["card", "us-ssn", "iban"]`). Pure.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    Card,
    UsSsn,
    Iban,
}

impl Rule {
    pub fn parse(s: &str) -> Option<Rule> {
        match s {
            "card" => Some(Rule::Card),
            "us-ssn" => Some(Rule::UsSsn),
            "iban" => Some(Rule::Iban),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Rule::Card => "[card number removed]",
            Rule::UsSsn => "[national id removed]",
            Rule::Iban => "[IBAN removed]",
        }
    }
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn iban_ok(chars: &[char]) -> bool {
    let s: String = chars
        .iter()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    if !(15..=34).contains(&s.len()) {
        return false;
    }
    let rotated = format!("{}{}", &s[4..], &s[..4]);
    let mut rem: u32 = 0;
    for c in rotated.chars() {
        let v = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A'..='Z' => c as u32 - 'A' as u32 + 10,
            _ => return false,
        };
        for d in v.to_string().chars() {
            rem = (rem * 10 + (d as u32 - '0' as u32)) % 97;
        }
    }
    rem == 1
}

/// Masks every match of `rules` in `text`; returns the masked text and how many were masked.
pub fn apply(rules: &[Rule], text: &str) -> (String, usize) {
    if rules.is_empty() {
        return (text.to_string(), 0);
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut n = 0;
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0 || !chars[i - 1].is_ascii_alphanumeric();
        if boundary && let Some((len, rule)) = match_at(rules, &chars[i..]) {
            out.push_str(rule.label());
            n += 1;
            i += len;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    (out, n)
}

fn match_at(rules: &[Rule], s: &[char]) -> Option<(usize, Rule)> {
    let end_ok = |len: usize| s.get(len).is_none_or(|c| !c.is_ascii_alphanumeric());
    if rules.contains(&Rule::UsSsn) && s.len() >= 11 {
        let pat = s[..11].iter().enumerate().all(|(k, c)| {
            if k == 3 || k == 6 {
                *c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
        if pat && end_ok(11) {
            return Some((11, Rule::UsSsn));
        }
    }
    if rules.contains(&Rule::Card) && s.first().is_some_and(char::is_ascii_digit) {
        // 13 to 19 digits, single spaces or dashes allowed between them.
        let mut digits = Vec::new();
        let mut k = 0;
        let mut best = None;
        while k < s.len() && digits.len() < 19 {
            let c = s[k];
            if c.is_ascii_digit() {
                digits.push(c as u8 - b'0');
                k += 1;
                if digits.len() >= 13 && end_ok(k) && luhn(&digits) {
                    best = Some(k);
                }
            } else if (c == ' ' || c == '-')
                && s.get(k + 1).is_some_and(char::is_ascii_digit)
                && !digits.is_empty()
            {
                k += 1;
            } else {
                break;
            }
        }
        if let Some(len) = best {
            return Some((len, Rule::Card));
        }
    }
    if rules.contains(&Rule::Iban)
        && s.len() >= 15
        && s[0].is_ascii_alphabetic()
        && s[1].is_ascii_alphabetic()
        && s[2].is_ascii_digit()
        && s[3].is_ascii_digit()
    {
        let mut k = 4;
        let mut best = None;
        while k < s.len() && k < 42 {
            let c = s[k];
            if c.is_ascii_alphanumeric() {
                k += 1;
                if end_ok(k) && iban_ok(&s[..k]) {
                    best = Some(k);
                }
            } else if c == ' ' && s.get(k + 1).is_some_and(char::is_ascii_alphanumeric) {
                k += 1;
            } else {
                break;
            }
        }
        if let Some(len) = best {
            return Some((len, Rule::Iban));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Rule; 3] = [Rule::Card, Rule::UsSsn, Rule::Iban];

    #[test]
    fn masks_valid_numbers_only() {
        let (t, n) = apply(&ALL, "my card is 4111 1111 1111 1111, exp 12/28");
        assert_eq!(
            (t.as_str(), n),
            ("my card is [card number removed], exp 12/28", 1)
        );
        assert_eq!(
            apply(&ALL, "4111-1111-1111-1111").0,
            "[card number removed]"
        );
        assert_eq!(
            apply(&ALL, "order 4111111111111112 failed").1,
            0,
            "Luhn fails: not a card"
        );
        assert_eq!(
            apply(&ALL, "ssn 078-05-1120 ok").0,
            "ssn [national id removed] ok"
        );
        assert_eq!(
            apply(&ALL, "IBAN GB82 WEST 1234 5698 7654 32 please").0,
            "IBAN [IBAN removed] please"
        );
        assert_eq!(
            apply(&ALL, "GB82WEST12345698765433").1,
            0,
            "bad IBAN checksum"
        );
        assert_eq!(
            apply(&[Rule::Card], "078-05-1120").1,
            0,
            "only the portal's rules apply"
        );
        assert_eq!(apply(&[], "4111111111111111").1, 0);
        assert_eq!(apply(&ALL, "phone 555-1234, ticket 12345").1, 0);
    }
}
