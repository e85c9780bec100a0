//! Engine tests: each detector on shapes of its own (not the evaluation
//! corpus's templates), look-alikes that must survive, and the walkers.

use super::*;

fn redact(format: Format, input: &str, opts: &Options) -> (String, Findings) {
    let r = Redactor::new(
        &EngineSettings::default(),
        Some(HashKey::new("t1", &[9; 32])),
    )
    .unwrap();
    let mut s = r.session(opts, None);
    let mut out = Vec::new();
    s.body(format, input.as_bytes(), &mut out).unwrap();
    (String::from_utf8(out).unwrap(), s.findings)
}

fn text(input: &str) -> String {
    redact(Format::Text, input, &Options::default()).0
}

/// Options that take the line-by-line path (each line timed) with a
/// budget no line reaches.
fn budgeted() -> Options {
    Options {
        budget: Some(std::time::Duration::from_secs(3600)),
        ..Default::default()
    }
}

fn label(input: &str) -> String {
    let opts = Kind::ALL.iter().fold(Options::default(), |o, k| {
        o.with_action(*k, "label").unwrap()
    });
    redact(Format::Text, input, &opts).0
}

#[test]
fn each_detector_finds_its_own() {
    let cases = [
        ("visa 4000 0566 5566 5556 ok", "visa [REDACTED:pan] ok"),
        (
            "mail John.Smith+tag@mail.example.co.uk.",
            "mail [REDACTED:email].",
        ),
        ("ssn=078-05-1120;", "ssn=[REDACTED:ssn];"),
        ("SSN 078051120 on file", "SSN [REDACTED:ssn] on file"),
        (
            "Social Security Number: 123456789.",
            "Social Security Number: [REDACTED:ssn].",
        ),
        (
            "social security number 078 05 1120",
            "social security number [REDACTED:ssn]",
        ),
        ("ss#:   078051120", "ss#:   [REDACTED:ssn]"),
        // Overlapping findings merge; a card's mask must not show the rest.
        ("x 4111 1111 1111 1111@mail.io y", "x [REDACTED:email] y"),
        ("call +49 30 901820 now", "call [REDACTED:phone] now"),
        ("call +14155550100.", "call [REDACTED:phone]."),
        ("tel (212) 555-0199 x", "tel [REDACTED:phone] x"),
        ("tel 212.555.0199", "tel [REDACTED:phone]"),
        (
            "iban DE89 3704 0044 0532 0130 00 paid",
            "iban [REDACTED:iban] paid",
        ),
        ("iban FR1420041010050500013M02606", "iban [REDACTED:iban]"),
        (
            "key ASIAY34FZKBOKMUTVV7A used",
            "key [REDACTED:aws_key_id] used",
        ),
        (
            "SecretAccessKey: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "SecretAccessKey: [REDACTED:aws_secret]",
        ),
        (
            "id AKIAIOSFODNN7EXAMPLE k wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "id [REDACTED:aws_key_id] k [REDACTED:aws_secret]",
        ),
        (
            "auth eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0. end",
            "auth [REDACTED:jwt] end",
        ),
        (
            "password=hunter2 user=bob",
            "password=[REDACTED:secret] user=bob",
        ),
        (
            "{\"api_key\": \"sk_live_abcdef\"}",
            "{\"api_key\": \"[REDACTED:secret]\"}",
        ),
        (
            "Authorization: Bearer abcDEF123456ghiJKL789",
            "Authorization: Bearer [REDACTED:secret]",
        ),
        ("card cvv=0412 exp", "card cvv=[REDACTED:cvv] exp"),
    ];
    for (input, want) in cases {
        assert_eq!(label(input), want, "{input}");
    }
}

#[test]
fn look_alikes_survive() {
    let keep = [
        "ts=1701541583094 done",                      // Luhn-valid ms timestamp
        "order 4111111111111112",                     // fails Luhn
        "acct 8014459711667514",                      // Luhn-valid, no issuer
        "ledger 49442699102374095436111",             // card window in a longer number
        "trace 73ab4876-7734-47c1-87fd-e805ec99108d", // UUID
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 merged", // git SHA-1, 40 hex
        "sha256=29a80b21ead8f062d15a4f4ef27e9589c6948f6d30c01c3f252edc87ff4adfa3",
        "build v9.14.48 amount=919.60",
        "date 2026-11-28 12:30:00",
        "id 123456789 qty 3", // 9 digits, no SSN context
        "token tok_FORl3FnIyAedSrx8rNbHlV and tok_hFqG4UYmwfOrJmub7WbdpjNB",
        "range 10-20-2030",
        "port 127.0.0.1:8443",        // IP is off by default
        "ssn 000-12-3456 is invalid", // area 000
    ];
    for k in keep {
        assert_eq!(text(k), k);
    }
}

#[test]
fn cards_are_found_however_their_groups_are_joined() {
    for (gap, masked) in [
        (".", "."),
        ("  ", "  "),
        ("\t", "\t"),
        ("\u{a0}", "\u{a0}"),
        ("+", "+"),
        (" - ", " - "),
    ] {
        let card = ["4111", "1111", "1111", "1111"].join(gap);
        let want = ["****", "****", "****", "1111"].join(masked);
        assert_eq!(text(&format!("cc={card}&x=1")), format!("cc={want}&x=1"));
    }
    // Space-like gaps split: a card followed by a year is still found.
    assert_eq!(
        text("pan 5105\t1051\t0510\t5100\t2026"),
        "pan ****\t****\t****\t5100\t2026"
    );
    for keep in [
        "v 4111.1111.1111.1112 bad check digit",
        "ip 10.120.33.4 and 192.168.100.200",
        "sum 1234+5678+9012 done",
        "pi 3.14159265358979",
    ] {
        assert_eq!(text(keep), keep);
    }
}

#[test]
fn secrets_are_found_in_other_spellings_and_quotes() {
    for line in [
        "login accessToken=hunter2hunter2 ok",
        "clientSecret: hunter2hunter2",
        "X-Auth-Token: hunter2hunter2",
        "newPassword=hunter2hunter2 DBPASSWORD=hunter2hunter2",
        "password='hunter2hunter2 and more' ok",
        "cfg {'password': 'hunter2hunter2'}",
        "php 'password' => 'hunter2hunter2',",
        "ruby {\"password\"=>\"hunter2hunter2\"}",
        "aws_secret_access_key = 'hunter2hunter2/K7MDENG/bPxRfiCYEXAMPLEKEY'",
    ] {
        let out = text(line);
        assert!(!out.contains("hunter2"), "{line} -> {out}");
    }
    // Credentials in URLs, and HTTP Basic authorization: the secret goes,
    // the rest of the line stays.
    for (line, want) in [
        (
            "dsn=postgres://app:hunter2hunter2@10.0.0.5:5432/shop ok",
            "dsn=postgres://app:**************@10.0.0.5:5432/shop ok",
        ),
        ("redis://:hunter2@cache:6379", "redis://:*******@cache:6379"),
        // A URL inside JSON in a text line ends at its closing quote.
        (
            "{\"db\":\"redis://:hunter2@cache:6379\",\"user\":\"ann@x.io\"}",
            "{\"db\":\"redis://:*******@cache:6379\",\"user\":\"********\"}",
        ),
        (
            "smtp://ann@shop.io:hunter2@pw@mail/x",
            // The user name is an email address: masked as one.
            "smtp://***********:**********@mail/x",
        ),
        (
            "Authorization: Basic YXBwOmh1bnRlcjI= sent",
            "Authorization: Basic **************** sent",
        ),
        (
            "{\"authorization\":\"basic YXBwOmh1bnRlcjI\"}",
            "{\"authorization\":\"basic ***************\"}",
        ),
    ] {
        assert_eq!(text(line), want, "{line}");
    }
    // Look-alikes stay: a URL with a port or an address in its query, an
    // ordinary word after "basic", base64 that holds no pair.
    for line in [
        "GET https://shop.example:8443/a?page=2 ok",
        "see https://host:8080/path@v2 and http://[::1]:80/",
        "basic auth is basic knowledge",
        "Basic dGV4dCB3aXRob3V0IGNvbG9u",
        "redis://***:***@cache",
    ] {
        assert_eq!(text(line), line);
    }
    let ndjson = "{\"msg\":\"login accessToken=hunter2hunter2\"}\n";
    let (out, _) = redact(Format::Ndjson, ndjson, &Options::default());
    assert!(!out.contains("hunter2"), "{out}");
    let pgp = "a\n-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGVhunter2\n=hunter2\n-----END PGP PRIVATE KEY BLOCK-----\nok\n";
    let out = text(pgp);
    assert!(
        !out.contains("hunter2") && out.starts_with("a\n") && out.ends_with("\nok\n"),
        "{out}"
    );
}

#[test]
fn mask_keeps_shape_and_last_four() {
    assert_eq!(text("pan 4111-1111-1111-1111."), "pan ****-****-****-1111.");
    assert_eq!(text("a@b.io"), "******");
    assert_eq!(
        text("x 4111 1111 1111 1111@b.io y"),
        "x ************************ y"
    );
    // A pair inside an earlier pair's value is still a pair.
    let two = text("secret=abc:password=\"two words\" ok");
    assert!(!two.contains("two") && !two.contains("words"), "{two}");
    // Every name the text detector knows is a field rule in JSON, where an
    // escaped string stops the raw scan from pairing name and value.
    for name in ["pwd", "db_secret_key"] {
        let line = format!("{{\"{name}\":\"hunter2\",\"x\":\"a\\\\b\"}}\n");
        let (out, _) = redact(Format::Ndjson, &line, &Options::default());
        assert!(!out.contains("hunter2"), "{out}");
    }
}

#[test]
fn hash_is_stable_keyed_and_normalized() {
    let opts = Options::default().with_actions(Some("pan:hash")).unwrap();
    let (a, _) = redact(Format::Text, "4111 1111 1111 1111", &opts);
    let (b, _) = redact(Format::Text, "4111-1111-1111-1111", &opts);
    assert_eq!(a, b);
    assert!(
        a.starts_with("[HASH:pan:t1:") && a.len() == "[HASH:pan:t1:]".len() + 24,
        "{a}"
    );
    assert!(!a.contains("1111"));
}

#[test]
fn pem_blocks_are_masked_across_lines() {
    let input = "before\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabcd\n-----END RSA PRIVATE KEY----- after\nnext 4111111111111111\n";
    let out = text(input);
    assert!(
        !out.contains("MIIE") && !out.contains("abcd") && !out.contains("BEGIN"),
        "{out}"
    );
    assert!(out.contains(" after\nnext ************1111\n"), "{out}");
    // An end marker split across two lines ends nothing: the key's body
    // after it stays masked.
    let split = "-----BEGIN PRIVATE KEY-----\n-----END RSA\nPRIVATE KEY-----\nMIIEvQIBADANBgkq\n-----END PRIVATE KEY-----\nok\n";
    let out = text(split);
    assert!(!out.contains("MIIE"), "{out}");
    assert!(out.ends_with("\nok\n"), "{out}");
    assert_eq!(out.lines().count(), split.lines().count());
    // An end marker is read as a marker, not as any `PRIVATE KEY-----`
    // after `-----END `: the next key's begin marker is not swallowed;
    // nor is one that shares the end marker's dashes.
    let two = "-----BEGIN PGP PRIVATE KEY BLOCK-----\nAAAA\n-----END PGP PRIVATE KEY BLOCK----- -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\n-----END PRIVATE KEY-----\nok\n";
    let shared = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----BEGIN RSA PRIVATE KEY-----\nMIIEsecret\n-----END RSA PRIVATE KEY-----\nok\n";
    let dashes = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY------BEGIN RSA PRIVATE KEY-----\nMIIEsecret\n-----END RSA PRIVATE KEY-----\nok\n";
    for keys in [two, shared, dashes] {
        for opts in [Options::default(), budgeted()] {
            for format in [Format::Text, Format::Ndjson] {
                let (out, _) = redact(format, keys, &opts);
                assert!(!out.contains("MIIE") && !out.contains("AAAA"), "{out}");
                assert!(out.ends_with("\nok\n"), "{out}");
            }
            let json = serde_json::json!({ "m": keys }).to_string();
            let (out, _) = redact(Format::Json, &json, &opts);
            assert!(!out.contains("MIIE") && out.contains("ok"), "{out}");
        }
    }
    // A match that runs into the begin marker (a bearer value may hold
    // dashes, a JWT's signature too) does not hide the key behind it.
    for first in [
        "Bearer abcdefghij-----BEGIN RSA PRIVATE KEY-----",
        "eyJab.eyJcd.-----BEGIN PRIVATE KEY-----",
    ] {
        let pem = format!("{first}\nMIIEvQIBADANBgkq\n-----END RSA PRIVATE KEY-----\nok\n");
        for opts in [Options::default(), budgeted()] {
            let (out, _) = redact(Format::Text, &pem, &opts);
            assert!(!out.contains("MIIE"), "{out}");
            assert!(out.ends_with("\nok\n"), "{out}");
        }
        let json = serde_json::json!({ "m": pem, "n": 1 }).to_string();
        for format in [Format::Json, Format::Ndjson] {
            let (out, _) = redact(format, &json, &Options::default());
            assert!(!out.contains("MIIE") && out.contains("ok"), "{out}");
        }
    }
    // Line by line (each line timed), a begin marker merged into an
    // earlier finding still opens the block.
    for first in [
        "-----BEGIN PRIVATE KEY-----",
        "password=x-----BEGIN EC PRIVATE KEY-----",
    ] {
        let pem = format!("{first}\nMIIEvQIBADANBgkq\n-----END PRIVATE KEY-----\nok\n");
        let (out, _) = redact(Format::Text, &pem, &budgeted());
        assert!(!out.contains("MIIE"), "{out}");
        assert!(out.ends_with("\nok\n"), "{out}");
    }
    let (j, _) = redact(
        Format::Json,
        r#"{"k":"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----","n":1}"#,
        &Options::default(),
    );
    assert!(!j.contains("MIIB") && j.contains("\"n\":1"), "{j}");
    // Every action keeps the line count of a multi-line block.
    for action in ["label", "hash", "drop"] {
        let opts = Options::default()
            .with_actions(Some(&format!("private_key:{action}")))
            .unwrap();
        let (out, _) = redact(Format::Text, input, &opts);
        assert_eq!(
            out.lines().count(),
            input.lines().count(),
            "{action}: {out}"
        );
        assert!(
            !out.contains("MIIE") && !out.contains("abcd"),
            "{action}: {out}"
        );
    }
}

#[test]
fn json_fields_numbers_tokens_and_drop() {
    let input = r#"{"payment":{"cvv":"061","card_number":4111111111111111,"token":"tok_FORl3FnIyAedSrx8rNbHlV","amount":733.9},"pin":1234,"cardNumber":"4111111111111112"}"#;
    let (out, f) = redact(Format::Json, input, &Options::default());
    assert_eq!(
        out,
        r#"{"payment":{"cvv":"***","card_number":"************1111","token":"tok_FORl3FnIyAedSrx8rNbHlV","amount":733.9},"pin":"****","cardNumber":"4111111111111112"}"#
    );
    assert_eq!(f.header_value(), "pan=1, secret=1, cvv=1");
    let opts = Options::default()
        .with_actions(Some("cvv:drop,email:drop"))
        .unwrap();
    let (out, _) = redact(
        Format::Json,
        r#"{"cvv":"123","who":"a@b.io","keep":1}"#,
        &opts,
    );
    assert_eq!(out, r#"{"keep":1}"#);
}

#[test]
fn report_counts_and_paths_without_values() {
    let opts = Options {
        report: true,
        ..Default::default()
    };
    let input =
        "{\"payment\":{\"card\":\"4111111111111111\"},\"items\":[{\"note\":\"to a@b.io\"}]}\n";
    let (out, f) = redact(Format::Ndjson, input, &opts);
    assert_eq!(out, "");
    let r = f.report();
    assert_eq!(r["findings"]["pan"], 1);
    assert_eq!(r["paths"]["$.payment.card"], "pan");
    assert_eq!(r["paths"]["$.items[0].note"], "email");
    assert!(!r.to_string().contains("4111"));
}

#[test]
fn a_zero_budget_masks_every_line() {
    let opts = Options {
        budget: Some(std::time::Duration::ZERO),
        ..Default::default()
    };
    let (out, _) = redact(Format::Text, "abc\nde\n", &opts);
    assert_eq!(out, "***\n**\n");
}

#[test]
fn detectors_can_be_switched() {
    let opts = Options::default().with_detectors(Some("ip")).unwrap();
    let (out, _) = redact(Format::Text, "from 10.1.2.3 and ::1 by a@b.io", &opts);
    assert_eq!(out, "from ******** and *** by a@b.io");
    assert!(
        Options::default()
            .with_actions(Some("email:tokenize"))
            .is_err()
    );
    assert!(Options::default().with_detectors(Some("dna")).is_err());
}

/// A line that is JSON but that serde_json refuses (a lone surrogate's
/// escape, a number past an `f64`) is masked whole: a text scan would lose
/// its field rules and read a card written as a number as no card.
#[test]
fn json_the_parse_refuses_is_masked_whole() {
    for line in [
        "{\"cardNumber\": 4111111111111111e0, \"s\": \"\\ud800\"}\n",
        "[4111111111111111.0, \"\\ud800\"]\n",
        "{\"cardNumber\": 4111111111111111e0, \"x\": 1e400, \"s\": \"\\\"\"}\n",
        "{\"cvv\": 123, \"x\": -1E400}\n",
    ] {
        let (out, f) = redact(Format::Ndjson, line, &Options::default());
        assert_eq!(out, format!("{}\n", "*".repeat(line.len() - 1)), "{line}");
        assert_eq!(f.header_value(), "secret=1", "{line}");
    }
    // Nested past serde_json's limit, with a field rule and a card as a
    // number inside.
    let deep = format!(
        "{}{{\"pin\": 1234, \"cardNumber\": 4111111111111111e0}}{}\n",
        "[".repeat(200),
        "]".repeat(200)
    );
    let (out, f) = redact(Format::Ndjson, &deep, &Options::default());
    assert_eq!(out, format!("{}\n", "*".repeat(deep.len() - 1)));
    assert_eq!(f.header_value(), "secret=1");
    // A private key begun in such a line masks the lines after it to its
    // end, as a text scan of the line would have it.
    let pem = "{\"k\": \"-----BEGIN PRIVATE KEY-----\", \"s\": \"\\ud800\"}\nMIIEvQIBADANBgkqhkiG\n-----END PRIVATE KEY-----\n{\"ok\":1}\n";
    let (out, _) = redact(Format::Ndjson, pem, &Options::default());
    assert!(!out.contains("MIIE"), "{out}");
    assert!(out.ends_with("{\"ok\":1}\n"), "{out}");
    // Not JSON: scanned as text, as before.
    let (out, _) = redact(
        Format::Ndjson,
        "[2026-11-28] pay 4111 1111 1111 1111 \\ud800\n",
        &Options::default(),
    );
    assert_eq!(out, "[2026-11-28] pay **** **** **** 1111 \\ud800\n");
}

#[test]
fn ndjson_fast_path_never_skips_what_the_walk_would_find() {
    // A clean line passes through byte for byte (spacing kept).
    let clean = "{\"msg\": \"ok\",  \"n\": 12}\n";
    assert_eq!(redact(Format::Ndjson, clean, &Options::default()).0, clean);
    // An escape can hide digits from the raw scan: the walk still runs.
    let escaped = "{\"c\":\"\\u0034111111111111111\"}\n";
    let (out, f) = redact(Format::Ndjson, escaped, &Options::default());
    assert_eq!(f.header_value(), "pan=1", "{out}");
    // A card written with an exponent is found by its value (a fuzzer
    // found `62e17` passing through when it stood alone on its line).
    for hidden in [
        "62e17\n",
        "{\"n\": 4.111111111111111e+15}\n",
        "[1,-41111111111111.11E2 ]\r\n",
        "{\"a\":{\"b\":\t4111111111111111e0}}",
        "[-4111111111111111]",
        "{\"n\": -4.111111111111111e15}",
        // Fractions: one the f64 rounds into a card, one after a card.
        "{\"a\": 4111111111111110.9}",
        "{\"amount\": 4111111111111111.5}",
    ] {
        let (out, f) = redact(Format::Ndjson, hidden, &Options::default());
        assert_eq!(f.header_value(), "pan=1", "{hidden}: {out}");
    }
    // A PEM block opened by a malformed line masks the lines after it; so
    // does one begun under a sensitive field (masked whole unread), under
    // a key the parse drops for its duplicate, or inside an earlier
    // finding (merged into it, of its type). Its body lines are masked
    // whether or not they are JSON.
    for first in [
        "-----BEGIN PRIVATE KEY-----",
        "{\"privateKey\":\"-----BEGIN PRIVATE KEY-----\"}",
        "{\"k\":\"-----BEGIN PRIVATE KEY-----\",\"k\":\"\\u0041\"}",
        "{\"privateKey\":\"x -----BEGIN PRIVATE KEY-----\"}",
        "{\"m\":\"password=x-----BEGIN PRIVATE KEY-----\"}",
        "password=x-----BEGIN EC PRIVATE KEY-----",
        // Written with escapes, under values no walk reads.
        "{\"privateKey\":\"-----BEGIN PRIVATE KEY\\u002d----\"}",
        "{\"k\":\"-----BEGIN PRIVATE KEY\\u002d----\",\"k\":1}",
        "{\"name\":\"password\",\"value\":\"-----BEGIN PRIVATE KEY\\u002d----\"}",
        "{\"privateKey\":\"-----BEGIN PRIVATE KEY\\u002d----\",\"n\":1e400}",
    ] {
        for body in ["MIIEvQIBADANBgkqhkiG", "{\"a\":\"MIIEvQIBADANBgkqhkiG\"}"] {
            let pem = format!("{first}\n{body}\n-----END PRIVATE KEY-----\n{{\"ok\":1}}\n");
            for opts in [Options::default(), budgeted()] {
                let (out, _) = redact(Format::Ndjson, &pem, &opts);
                assert!(!out.contains("MIIE"), "{pem}: {out}");
                assert!(out.ends_with("{\"ok\":1}\n"), "{pem}: {out}");
            }
        }
    }
    // A begin marker after the end marker on a line that is not JSON,
    // written with escapes, opens the block again.
    let again = "-----BEGIN PRIVATE KEY-----\nMIIEa\n-----END PRIVATE KEY----- {\"k\":\"-----BEGIN PRIVATE KEY\\u002d----\"}\nMIIEsecond\n-----END PRIVATE KEY-----\nok\n";
    let (out, _) = redact(Format::Ndjson, again, &Options::default());
    assert!(!out.contains("MIIE") && out.ends_with("\nok\n"), "{out}");
    // A line of JSON that ends the block is masked whole, not scanned as
    // text after the marker, where its field rules would be lost.
    let ended = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\n{\"m\":\"-----END PRIVATE KEY-----\",\"pin\":\"1234\"}\n{\"pin\":\"5678\"}\n";
    for opts in [Options::default(), budgeted()] {
        let (out, _) = redact(Format::Ndjson, ended, &opts);
        assert!(!out.contains("1234") && !out.contains("5678"), "{out}");
        assert_eq!(out.lines().count(), 4, "{out}");
    }
    // A field rule needs no shape in the value.
    let cvv = "{\"payment\":{\"CVV\":\"123\"}}\n";
    assert_eq!(
        redact(Format::Ndjson, cvv, &Options::default()).0,
        "{\"payment\":{\"CVV\":\"***\"}}\n"
    );
}

/// Card security codes and PINs under the names schemes, gateways and
/// callers give them, in text and in JSON; the look-alikes (`acid`,
/// `customer_cid`, `map_pin`, a postal `pincode`, a gateway's `cvv_result`
/// letter) survive.
#[test]
fn security_codes_and_pins_are_found_under_every_common_name() {
    let cases = [
        ("card_cvv=123 x", "card_cvv=[REDACTED:cvv] x"),
        ("cvv_code=456 x", "cvv_code=[REDACTED:cvv] x"),
        ("cardCvv: 789 x", "cardCvv: [REDACTED:cvv] x"),
        (
            "CVN2=321 cav2=654 cvd: 987",
            "CVN2=[REDACTED:cvv] cav2=[REDACTED:cvv] cvd: [REDACTED:cvv]",
        ),
        (
            "amex_cid=1234 cid: 999",
            "amex_cid=[REDACTED:cvv] cid: [REDACTED:cvv]",
        ),
        (
            r#"security_code => "123" cardCode=0412"#,
            r#"security_code => "[REDACTED:cvv]" cardCode=[REDACTED:cvv]"#,
        ),
        (
            "card_verification_value=123",
            "card_verification_value=[REDACTED:cvv]",
        ),
        (
            "pin=1234 card_pin=4321",
            "pin=[REDACTED:secret] card_pin=[REDACTED:secret]",
        ),
        (
            "PIN_BLOCK: 0412AC89ABCDEF01 ok",
            "PIN_BLOCK: [REDACTED:secret] ok",
        ),
        (
            "user_pin_number='123456'",
            "user_pin_number='[REDACTED:secret]'",
        ),
        ("cardPin=0412", "cardPin=[REDACTED:secret]"),
        (
            "user_pin=1234 newPin: 4321 atm-pin=9999",
            "user_pin=[REDACTED:secret] newPin: [REDACTED:secret] atm-pin=[REDACTED:secret]",
        ),
        (
            "pinblock=0412 AC89 ABCD EF01 ok",
            "pinblock=[REDACTED:secret] ok",
        ),
        (
            "cvv_2=123 cvv-2=456 card_cvd=789",
            "cvv_2=[REDACTED:cvv] cvv-2=[REDACTED:cvv] card_cvd=[REDACTED:cvv]",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(label(input), want, "{input}");
    }
    for keep in [
        "acid=123 customer_cid=1234",
        "spin=1234 hairpin: 4321 pinned=1234 pincode=560001",
        "cvv_result=M cvvMatch: Y",
        "sent=100 rcvd=2048 pkts_rcvd=4096",
    ] {
        assert_eq!(text(keep), keep);
    }
    for name in [
        "security_code",
        "cardCode",
        "cvn2",
        "cav2",
        "cvv_code",
        "cvc2Number",
        "cardcid",
        "amex_cid",
        "card_verification_value",
        "cardPin",
        "pin_number",
        "userPin",
        "new_pin",
        "card_cvd",
    ] {
        let line = format!("{{\"{name}\":\"0412\",\"m\":\"x\"}}\n");
        let (out, _) = redact(Format::Ndjson, &line, &Options::default());
        assert!(!out.contains("0412"), "{name}: {out}");
    }
    for name in ["customer_cid", "pincode", "cvvResult", "acid", "bytes_rcvd"] {
        let line = format!("{{\"{name}\":\"0412\"}}\n");
        assert_eq!(redact(Format::Ndjson, &line, &Options::default()).0, line);
    }
}

/// Credentials known by their prefix, wherever they stand; the `Token`
/// authorization scheme; session tokens by name. Publishable keys and
/// look-alikes glued to a word survive.
#[test]
fn vendor_credentials_and_session_tokens_are_found() {
    for (input, secret) in [
        (
            "stripe key sk_live_4eC39HqLyjWDarjtT1zdp7dc, ok",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        ),
        (
            "rk_test_4eC39HqLyjWDarjtT1zdp7dc",
            "rk_test_4eC39HqLyjWDarjtT1zdp7dc",
        ),
        (
            "gh auth ghp_16C7e42F292c6912E7710c838347Ae178B4a done",
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        ),
        (
            "pat github_pat_11ABCDEFG0123456789_abcdefghij ok",
            "github_pat_11ABCDEFG0123456789_abcdefghij",
        ),
        (
            "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
        ),
        (
            "gcp AIzaSyD-1234567890abcdefghijklmnopqrstu done",
            "AIzaSyD-1234567890abcdefghijklmnopqrstu",
        ),
        (
            "gl glpat-abcdefghij0123456789 done",
            "glpat-abcdefghij0123456789",
        ),
        (
            "Authorization: Token 9944b09199c62bcf9418ad846dd0 ok",
            "9944b09199c62bcf9418ad846dd0",
        ),
        (
            "aws_session_token=FwoGZXIvYXdzEBYaDH ok",
            "FwoGZXIvYXdzEBYaDH",
        ),
        // AWS session tokens by their own prefix, under any name.
        (
            r#"{"Code" : "Success", "Token" : "IQoJb3JpZ2luX2VjEDU86Rcfd/34E4rtgk8+KuTq==", "Expiration" : "x"}"#,
            "IQoJb3JpZ2luX2VjEDU86Rcfd/34E4rtgk8+KuTq==",
        ),
        (
            "Credentials(access_key='ASIA', secret_key='x', token='AgoJb3JpZ2luX2VjEGcaCXVzLXdlc3Qt')",
            "AgoJb3JpZ2luX2VjEGcaCXVzLXdlc3Qt",
        ),
        (
            "GET /o?X-Amz-Security-Token=IQoJb3JpZ2luX2VjEND%2F%2F%2FwEaCXVz%2BLX%3D&X-Amz-Signature=ab",
            "IQoJb3JpZ2luX2VjEND%2F%2F%2FwEaCXVz%2BLX%3D",
        ),
        (
            "token FQoGZXIvYXdzEBYaDLtcNupZxgkt6ivKyCLAA and AQoDYXdzEPT//////////wEXAMPLEtc764",
            "FQoGZXIvYXdzEBYaDLtcNupZxgkt6ivKyCLAA",
        ),
        (
            "AQoDYXdzEPT//////////wEXAMPLEtc764 ok",
            "AQoDYXdzEPT//////////wEXAMPLEtc764",
        ),
        (
            "GET /o?X-Amz-Security-Token=IQoJb3JpZ2luX2VjEND%252F%252FwEaCXVz%253D%26x",
            "IQoJb3JpZ2luX2VjEND%252F%252FwEaCXVz%253D",
        ),
    ] {
        let out = label(input);
        assert!(!out.contains(secret), "{input} -> {out}");
        assert!(out.contains("[REDACTED:secret]"), "{input} -> {out}");
    }
    for keep in [
        "pk_live_4eC39HqLyjWDarjtT1zdp7dc is public",
        "task_live_1234567890abcdefgh ask_live_1234567890abcdefgh",
        "Authorization: Token",
        "xIQoJb3JpZ2luX2VjEDU86Rcfd34E4rtgk8 IQoJb3JpZ2lu short",
    ] {
        assert_eq!(text(keep), keep);
    }
}

/// Human-readable logs write names as words: `API Key: …`, `Security
/// Code: 123`, `Enter PIN: 1234`; names of one word are read as before,
/// and ordinary words before a `:` are not names of anything.
#[test]
fn names_written_as_words_are_keys_too() {
    let cases = [
        ("API Key: abcdef123456 ok", "API Key: [REDACTED:secret] ok"),
        ("Client Secret = xyz", "Client Secret = [REDACTED:secret]"),
        ("Access Token: abcdef", "Access Token: [REDACTED:secret]"),
        ("Security Code: 123", "Security Code: [REDACTED:cvv]"),
        (
            "card verification value: 0412",
            "card verification value: [REDACTED:cvv]",
        ),
        ("CVV Number: 456", "CVV Number: [REDACTED:cvv]"),
        ("Enter PIN: 1234", "Enter PIN: [REDACTED:secret]"),
        ("PIN Number: 1234", "PIN Number: [REDACTED:secret]"),
    ];
    for (input, want) in cases {
        assert_eq!(label(input), want, "{input}");
    }
    for keep in [
        "error code: 500 status: ok",
        "the key: value here",
        "spin: 1234",
    ] {
        assert_eq!(text(keep), keep);
    }
}

/// A name numbered `1` or `2` is its name's: Django's forms send a
/// password and its confirmation as `new_password1` and `new_password2`
/// (`password1`/`password2` on sign-up); PIN changes `pin1`/`pin2`. In
/// text, JSON and NDJSON alike.
#[test]
fn numbered_names_are_their_names() {
    let body = "csrfmiddlewaretoken=x&old_password=a1&new_password1=hunter22&new_password2=hunter22&pin1=1234&pin_2=1234";
    let want = "csrfmiddlewaretoken=x&old_password=[REDACTED:secret]&new_password1=[REDACTED:secret]&new_password2=[REDACTED:secret]&pin1=[REDACTED:secret]&pin_2=[REDACTED:secret]";
    assert_eq!(label(body), want);
    let doc = r#"{"password1":"hunter22","Password2":"hunter22","pin1":"1234","v1":"hunter22"}"#;
    for format in [Format::Json, Format::Ndjson] {
        let (out, _) = redact(format, doc, &Options::default());
        assert_eq!(
            out,
            doc.replacen("hunter22", "********", 2)
                .replace("\"1234\"", "\"****\""),
            "{format:?}"
        );
    }
    for keep in [
        "password12=x v1=2 sha1=abc spin1=5 ipv4: 10 password3=x",
        "md5=abc",
    ] {
        assert_eq!(text(keep), keep);
    }
}

/// Rails' ActiveRecord logs a statement's binds after it as a list of
/// `["name", value]`: a secret's value is masked, the rest kept, and
/// Rails' own `[FILTERED]` left as it is.
#[test]
fn rails_bind_lists_are_read_as_pairs() {
    let line = r#"  User Update (0.6ms)  UPDATE "users" SET "encrypted_password" = $1, "updated_at" = $2 WHERE "users"."id" = $3  [["encrypted_password", "$2a$12$K3a9vZ"], ["updated_at", "2024-01-01"], ["id", 1]]"#;
    let out = label(line);
    assert!(
        out.ends_with(r#"[["encrypted_password", "[REDACTED:secret]"], ["updated_at", "2024-01-01"], ["id", 1]]"#),
        "{out}"
    );
    let insert = r#"ApiKey Create  INSERT INTO "api_keys" ("client_secret") VALUES ($1)  [["client_secret", "s3cr3tvalue"], ["token", "t1"]]"#;
    assert_eq!(text(insert), insert.replace("s3cr3tvalue", "***********"));
    for keep in [
        r#"User Load  SELECT 1 WHERE "email" = $1  [["email", "ann"], ["LIMIT", 1]]"#,
        r#"x [["password", "[FILTERED]"]] [[1, 2]]"#,
    ] {
        assert_eq!(text(keep), keep);
    }
}

/// PostgreSQL logs a statement's parameters apart from it (`DETAIL:
/// parameters: $1 = '…'`, the next line; later in the same row in
/// csvlog): the values of placeholders that the statement put under a
/// secret's or a security code's name, or in such a column of an INSERT,
/// are masked, and the rest kept.
#[test]
fn postgres_parameters_lists_follow_their_statement() {
    let log = "10:00 [7] LOG:  execute <unnamed>: UPDATE users SET password = $1 WHERE email = $2\n\
               10:00 [7] DETAIL:  parameters: $1 = 'Hunter2 it''s', $2 = 'bob'\n\
               10:01 [7] LOG:  execute S_1: INSERT INTO \"cards\" (\"name\", \"api_key\", cvv) VALUES ($1, $2, $3), ($4, $5, $6)\n\
               10:01 [7] DETAIL:  parameters: $1 = 'a', $2 = 'ak-1', $3 = '123', $4 = 'b', $5 = 'ak-2', $6 = NULL\n\
               10:02 [7] DETAIL:  parameters: $1 = 'not after a statement', $2 = 'kept'\n";
    let want = log
        .replace("'Hunter2 it''s'", "'[REDACTED:secret]'")
        .replace("'123'", "'[REDACTED:cvv]'")
        .replace("'ak-1'", "'[REDACTED:secret]'")
        .replace("'ak-2'", "'[REDACTED:secret]'")
        .replace("password = $1", "password = [REDACTED:secret]");
    assert_eq!(label(log), want);
    let masked = text(log);
    assert_eq!(redact(Format::Text, log, &budgeted()).0, masked);
    let at = log.find("10:00 [7] DETAIL").unwrap();
    assert_eq!(streamed(Format::Text, log, 1 << 16, at), masked);
    // csvlog: the statement and its list in one row; a list cut short
    // masks to the line's end.
    let csv = "x,\"execute <unnamed>: update u set pwd=$2 where id=$1\",\"parameters: $1 = '7', $2 = 's3cr''et'\"\n\
               q,\"update u set secret=$1\",\"parameters: $1 = 'cut sh\n\
               kept: 'it' and 'this'\n";
    assert_eq!(
        label(csv),
        "x,\"execute <unnamed>: update u set pwd=[REDACTED:secret] where id=$1\",\"parameters: $1 = '7', $2 = '[REDACTED:secret]'\"\n\
         q,\"update u set secret=[REDACTED:secret]\",\"parameters: $1 = '[REDACTED:secret]\n\
         kept: 'it' and 'this'\n"
    );
    // A list takes what was named before it only: the statement after
    // it waits for its own list.
    let order = "parameters: $1 = 'first' password=$1 parameters: $1 = 'second'";
    assert_eq!(
        label(order),
        "parameters: $1 = 'first' password=[REDACTED:secret] parameters: $1 = '[REDACTED:secret]'"
    );
    // An error's context list comes before its statement: all of its
    // values go, and the statement after it names nothing for the next
    // list. csvlog doubles a quoted name's quotes.
    let error = "ERROR:  duplicate key\n\
                 CONTEXT:  unnamed portal with parameters: $1 = 'a@b.io', $2 = 'pw1'\n\
                 STATEMENT:  INSERT INTO users (email, password) VALUES ($1, $2)\n\
                 DETAIL:  parameters: $1 = 'kept', $2 = 'kept too'\n\
                 x,\"UPDATE \"\"users\"\" SET \"\"password\"\" = $1::text\",\"parameters: $1 = 'pw2'\"\n";
    let out = label(error);
    for gone in ["a@b.io", "pw1", "pw2"] {
        assert!(!out.contains(gone), "{out}");
    }
    assert!(out.contains("$1 = 'kept', $2 = 'kept too'"), "{out}");
    // A context list alone, line by line too; a bind error's parameter.
    let alone = "CONTEXT:  unnamed portal with parameters: $1 = 'pw9'\n\
                 CONTEXT:  unnamed portal parameter $2 = 'pw7'\n";
    for out in [text(alone), redact(Format::Text, alone, &budgeted()).0] {
        assert!(!out.contains("pw9") && !out.contains("pw7"), "{out}");
    }
    // A name is read on its placeholder's line only, in a block or alone.
    let split =
        "UPDATE u SET password =\n  $1 WHERE id = $2\nDETAIL:  parameters: $1 = 'x', $2 = '7'\n";
    assert_eq!(text(split), redact(Format::Text, split, &budgeted()).0);
    // A statement line too long to read: the next list goes whole.
    let long = format!(
        "UPDATE u SET {}password = $1\nDETAIL:  parameters: $1 = 'pw8', $2 = 'x'\n",
        "a = 1, ".repeat(40)
    );
    let out = streamed(Format::Text, &long, 200, 64);
    assert!(
        out.contains("line-too-long") && !out.contains("pw8"),
        "{out}"
    );
    // Placeholders named inside a JSON string stay there.
    let ndjson = "{\"a\":\"-----BEGIN PRIVATE KEY-----\",\"b\":\"MIIE -----END PRIVATE KEY----- password=$1\"}\n\
                  parameters: $1 = 'kept', $2 = 'ann@shop.io'\n";
    let (out, _) = redact(Format::Ndjson, ndjson, &Options::default());
    assert!(out.contains("'kept'") && !out.contains("ann@"), "{out}");
    // An NDJSON line that is no JSON carries nothing to the next (a
    // clean line is not even read), whether or not that line is read.
    let ndjson = "UPDATE u SET password = $1\nparameters: $1 = 'kept', $2 = 'ann@shop.io'\n";
    let (out, _) = redact(Format::Ndjson, ndjson, &Options::default());
    assert!(out.contains("'kept'") && !out.contains("ann@"), "{out}");
}

/// Form bodies name fields in brackets (Rails, PHP, Stripe's API):
/// `card[cvc]=` and `params[password]=` passed while `cvc=` did not.
#[test]
fn bracketed_form_fields_are_keys_too() {
    let input = "card[number]=4242424242424242&card[cvc]=123&params[password]=hunter2&pm[card][pin]=1234&user[api_key]=abc";
    let want = "card[number]=[REDACTED:pan]&card[cvc]=[REDACTED:cvv]&params[password]=[REDACTED:secret]&pm[card][pin]=[REDACTED:secret]&user[api_key]=[REDACTED:secret]";
    assert_eq!(label(input), want);
    for keep in ["arr[0]=5 list[id]=7", "card[exp_month]=12"] {
        assert_eq!(text(keep), keep);
    }
}

/// The same bodies as they go on the wire and into HTTP clients' debug
/// logs, brackets percent-encoded: `card%5Bcvc%5D=123` passed.
#[test]
fn percent_encoded_bracketed_fields_are_keys_too() {
    // Each alone, so that no case's match stands in for another's.
    for (input, want) in [
        (
            "card%5Bnumber%5D=4242424242424242&card%5Bcvc%5D=123",
            "card%5Bnumber%5D=[REDACTED:pan]&card%5Bcvc%5D=[REDACTED:cvv]",
        ),
        (
            "user%5Bpassword%5D=hunter%212&x=1",
            "user%5Bpassword%5D=[REDACTED:secret]&x=1",
        ),
        (
            "pm%5bcard%5d%5bpin%5d=1234",
            "pm%5bcard%5d%5bpin%5d=[REDACTED:secret]",
        ),
        ("card%5Bcvd%5D=456", "card%5Bcvd%5D=[REDACTED:cvv]"),
        ("amex%5Bcid%5D=7890", "amex%5Bcid%5D=[REDACTED:cvv]"),
        ("x%5BCVV%5D =321", "x%5BCVV%5D =[REDACTED:cvv]"),
    ] {
        assert_eq!(label(input), want);
    }
    for keep in [
        "list%5Bid%5D=7&card%5Bexp_month%5D=12",
        "bytes%5Brcvd%5D=1234 spin%5D=1234 acid%5D=123",
    ] {
        assert_eq!(text(keep), keep);
    }
}

/// XML elements (gateway APIs, logged SOAP bodies, AWS's XML answers)
/// name their values as `name=value` pairs do: each passed whole before.
#[test]
fn xml_elements_are_keys_too() {
    // Each alone, so that no case's match stands in for another's.
    for (input, want) in [
        ("<cvv>123</cvv>", "<cvv>[REDACTED:cvv]</cvv>"),
        (
            "<ns1:cardCode>4321</ns1:cardCode>",
            "<ns1:cardCode>[REDACTED:cvv]</ns1:cardCode>",
        ),
        (
            "<cvNumber>999</cvNumber>",
            "<cvNumber>[REDACTED:cvv]</cvNumber>",
        ),
        (
            r#"<cvc xsi:type="xsd:string">123</cvc>"#,
            r#"<cvc xsi:type="xsd:string">[REDACTED:cvv]</cvc>"#,
        ),
        (
            "<cvv><![CDATA[ 123]]></cvv>",
            "<cvv><![CDATA[ [REDACTED:cvv]]]></cvv>",
        ),
        (
            r#"<wsse:Password Type="http://x#PasswordText">two words </wsse:Password>"#,
            r#"<wsse:Password Type="http://x#PasswordText">[REDACTED:secret] </wsse:Password>"#,
        ),
        (
            "<password><![CDATA[a<b]c]]></password>",
            "<password><![CDATA[[REDACTED:secret]]]></password>",
        ),
        ("<PIN>1234</PIN>", "<PIN>[REDACTED:secret]</PIN>"),
        (
            "<ns:pinBlock>0412 3456 7890 1234</ns:pinBlock>",
            "<ns:pinBlock>[REDACTED:secret]</ns:pinBlock>",
        ),
        (
            "<SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY</SecretAccessKey>",
            "<SecretAccessKey>[REDACTED:aws_secret]</SecretAccessKey>",
        ),
        (
            "<SessionToken>FwoGZXIvYXdzEBYaDH</SessionToken>",
            "<SessionToken>[REDACTED:secret]</SessionToken>",
        ),
        ("<cvv\r>123</cvv>", "<cvv\r>[REDACTED:cvv]</cvv>"),
    ] {
        assert_eq!(label(input), want, "{input}");
    }
    for keep in [
        "<cvv/>123",
        r#"<cvv a="1"/>123"#,
        "<cvv_result>M</cvv_result>",
        "<acid>123</acid>",
        "<passwordHint>blue</passwordHint>",
        "<cvv>abc</cvv>",
        "<password></password>",
        "<password>  </password>",
        "<password>null</password>",
        "</password>x <!-- password -->",
        "Option<Secret> loaded, Arc<Password> kept, Vec<ApiKey>",
    ] {
        assert_eq!(text(keep), keep);
    }
}

/// Shapes a probe of real services' logs found passing: JSON escaped into
/// a string (logfmt, Docker's json-file), names padded to a column, the
/// security-code and key names of gateways beyond the schemes' own.
#[test]
fn escaped_aligned_and_gateway_named_values_are_found() {
    for (input, want) in [
        (
            r#"level=info body="{\"cvv\":\"123\",\"password\":\"hun\\ter2\"}""#,
            r#"level=info body="{\"cvv\":\"[REDACTED:cvv]\",\"password\":\"[REDACTED:secret]\"}""#,
        ),
        (
            r#"{\"pin\": \"1234\"}"#,
            r#"{\"pin\": \"[REDACTED:secret]\"}"#,
        ),
        (
            "      DB_PASSWORD:        hunter22",
            "      DB_PASSWORD:        [REDACTED:secret]",
        ),
        (
            "Password          : hunter22",
            "Password          : [REDACTED:secret]",
        ),
        ("CVV     : 123", "CVV     : [REDACTED:cvv]"),
        ("CV2=123&x=1", "CV2=[REDACTED:cvv]&x=1"),
        (
            "credit_card[verification_value]=123",
            "credit_card[verification_value]=[REDACTED:cvv]",
        ),
        (
            "<cardValidationNum>349</cardValidationNum>",
            "<cardValidationNum>[REDACTED:cvv]</cardValidationNum>",
        ),
        (
            "<CardSecVal>123</CardSecVal>",
            "<CardSecVal>[REDACTED:cvv]</CardSecVal>",
        ),
        (
            "ccv=123 cvv_no=456",
            "ccv=[REDACTED:cvv] cvv_no=[REDACTED:cvv]",
        ),
        (
            r#""transactionKey":"346HZ32z3fP4hTG2""#,
            r#""transactionKey":"[REDACTED:secret]""#,
        ),
        (
            "x_tran_key=7Yy2Q8p9Xz3K4m5N",
            "x_tran_key=[REDACTED:secret]",
        ),
        (
            "X-Amz-Security-Token: FwoGZXIvYXdz",
            "X-Amz-Security-Token: [REDACTED:secret]",
        ),
        (
            r#"{"Name":"prod/db","SecretString":"hunter22"}"#,
            r#"{"Name":"prod/db","SecretString":"[REDACTED:secret]"}"#,
        ),
        (
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc/def==;EndpointSuffix=x",
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=[REDACTED:secret];EndpointSuffix=x",
        ),
        (
            "ENCRYPTION_KEY=k1 ADYEN_HMAC_KEY=k2 GITHUB_TOKEN=k3",
            "ENCRYPTION_KEY=[REDACTED:secret] ADYEN_HMAC_KEY=[REDACTED:secret] GITHUB_TOKEN=[REDACTED:secret]",
        ),
        (
            r#""password_confirmation"=>"hunter22""#,
            r#""password_confirmation"=>"[REDACTED:secret]""#,
        ),
        (
            "password_digest=$2a$12$R9h/cIPz0gi.URNNX3kh2O passwordHash: 'x1' PASSWORD_HASH=y2",
            "password_digest=[REDACTED:secret] passwordHash: '[REDACTED:secret]' PASSWORD_HASH=[REDACTED:secret]",
        ),
        (
            "Card(last4=1111, password=hunter2)",
            "Card(last4=1111, password=[REDACTED:secret])",
        ),
        (
            "Field error in object 'form' on field 'password': rejected value [two words]; codes [x]",
            "Field error in object 'form' on field 'password': rejected value [[REDACTED:secret]]; codes [x]",
        ),
        (
            "on field 'cvv': rejected value [123]; on field 'pin': rejected value [1234]",
            "on field 'cvv': rejected value [[REDACTED:cvv]]; on field 'pin': rejected value [[REDACTED:secret]]",
        ),
    ] {
        assert_eq!(label(input), want, "{input}");
    }
    for keep in [
        "Access denied for user 'app'@'db' (using password: YES)",
        "(using password: NO)",
        "rcv2=123 scv2=456",
        "Invalid token: expired",
    ] {
        assert_eq!(text(keep), keep);
    }
    // In a JSON document an Authorization field is a credential whatever
    // its scheme: the text scan's `Authorization: Basic` needs the name.
    let doc = r#"{"Authorization":"Basic Ym9iOmh1bnRlcjI=","h":[{"name":"Authorization","value":"Token abcdef1234567890"}]}"#;
    let out = redact(Format::Json, doc, &Options::default()).0;
    assert!(!out.contains("Ym9i") && !out.contains("abcdef"), "{out}");
    // A password's hash is a secret as a JSON field too.
    let doc = r#"{"user":{"password_digest":"$2a$12$R9h","passwordHash":"zz9"}}"#;
    let out = redact(Format::Json, doc, &Options::default()).0;
    assert!(!out.contains("R9h") && !out.contains("zz9"), "{out}");
}

/// A card dashed to an expiry, a date or a reference: the run as a whole
/// is no card, the card's own group is one.
#[test]
fn cards_dashed_to_a_date_or_an_expiry_are_found() {
    for (input, want) in [
        ("card=4111111111111111-12-25", "card=[REDACTED:pan]-12-25"),
        ("x 5555555555554444-1225 y", "x [REDACTED:pan]-1225 y"),
        (
            "key=20241203-4111111111111111",
            "key=20241203-[REDACTED:pan]",
        ),
        ("ref 378282246310005.01", "ref [REDACTED:pan].01"),
        (
            "id 99999-4111111111111111 2012",
            "id 99999-[REDACTED:pan] 2012",
        ),
        (
            "pay 4111 1111 1111 1111 ref 1-5555555555554444",
            "pay [REDACTED:pan] ref 1-[REDACTED:pan]",
        ),
    ] {
        assert_eq!(label(input), want, "{input}");
    }
    for keep in [
        "uuid 12345678-1234-1234-1234-123456789012",
        "ts 1700000000000-1 and 4111111111111112-12",
        "ledger 41111111111111111111-1",
        "id A4111111111111111-12 2012",
    ] {
        assert_eq!(text(keep), keep);
    }
}

/// A Secrets Manager ARN names a secret's path, not its value; Laravel
/// Sanctum's bearer tokens hold a `|`.
#[test]
fn arns_name_secrets_and_bearer_tokens_hold_bars() {
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf";
    assert_eq!(text(arn), arn);
    assert_eq!(
        label("Authorization: Bearer 5|lJd8xV9pQw3Rt7Yz1Kx4Mn6Bv2Cq8Ws0Ea"),
        "Authorization: Bearer [REDACTED:secret]"
    );
    // Short tokens hold a digit; short words are prose or a client's bug.
    assert_eq!(
        label("curl -H 'Authorization: Bearer a1b2c3d4'"),
        "curl -H 'Authorization: Bearer [REDACTED:secret]'"
    );
    for keep in [
        "Bearer authentication failed: Bearer undefined",
        "WWW-Authenticate: Bearer realm=api, Bearer a1b2c3",
    ] {
        assert_eq!(text(keep), keep);
    }
    assert_eq!(
        label("a:secret:x=1 secret:hunter2"),
        "a:secret:x=1 secret:[REDACTED:secret]"
    );
}

/// Secrets passed as a flag's next word, as CI jobs print commands.
#[test]
fn command_line_flags_carry_secrets() {
    for (input, want) in [
        (
            "+ docker login -u bob --password hunter22 registry.io",
            "+ docker login -u bob --password [REDACTED:secret] registry.io",
        ),
        (
            "vault login --token s.abc123XYZ",
            "vault login --token [REDACTED:secret]",
        ),
        (
            "exec mysqldump --db-password 'two words' --host db",
            "exec mysqldump --db-password '[REDACTED:secret]' --host db",
        ),
        (
            r#"args: ["--client_secret", "x9"]"#,
            r#"args: ["--client_secret", "x9"]"#,
        ),
        ("\"--api-key\tk-123\"", "\"--api-key\t[REDACTED:secret]\""),
        (
            "+ keytool -importkeystore -srcstorepass s3cret -deststorepass 'two words' -keypass k1",
            "+ keytool -importkeystore -srcstorepass [REDACTED:secret] -deststorepass '[REDACTED:secret]' -keypass [REDACTED:secret]",
        ),
        (
            "jarsigner -keystore ks.jks -storepass changeit app.apk",
            "jarsigner -keystore ks.jks -storepass [REDACTED:secret] app.apk",
        ),
        (
            "openssl pkcs12 -export -in c.pem -passout pass:hunter22 -out c.p12",
            "openssl pkcs12 -export -in c.pem -passout pass:[REDACTED:secret] -out c.p12",
        ),
        (
            "openssl rsa -passin 'pass:two' -in k.pem",
            "openssl rsa -passin 'pass:[REDACTED:secret]' -in k.pem",
        ),
        (
            "/usr/bin/mysql -h db -P 3306 -u root -pS3cret! app",
            "/usr/bin/mysql -h db -P 3306 -u root -p[REDACTED:secret] app",
        ),
        (
            "mysqldump -uroot -p'x y' shop > d.sql",
            "mysqldump -uroot -p'[REDACTED:secret]' shop > d.sql",
        ),
        (
            "mysql -u root -pSummer-party1 -e 'select 1'",
            "mysql -u root -p[REDACTED:secret] -e 'select 1'",
        ),
        (
            "mysql -e \"SET k='sk_live_4eC39HqLyjWDarjtT1zdp7dc'\" -u root -pS3cret",
            "mysql -e \"SET k='[REDACTED:secret]'\" -u root -p[REDACTED:secret]",
        ),
        (
            "keytool -list -storepass mypass:123 -v",
            "keytool -list -storepass [REDACTED:secret] -v",
        ),
        (
            "openssl rsa -passin 'pass:correct horse' -in k.pem",
            "openssl rsa -passin 'pass:[REDACTED:secret]' -in k.pem",
        ),
        (
            "-passin pass:x1 at the text's start; openssl rsa -passin 'pass:cut",
            "-passin pass:[REDACTED:secret] at the text's start; openssl rsa -passin 'pass:[REDACTED:secret]",
        ),
        (
            "mysql -e \"SHOW DATABASES; SELECT 1 -p\" -u root -pS3cret",
            "mysql -e \"SHOW DATABASES; SELECT 1 -p\" -u root -p[REDACTED:secret]",
        ),
        (
            "mysql -u root -e 'DELETE FROM s WHERE t < NOW()' -pS3cret",
            "mysql -u root -e 'DELETE FROM s WHERE t < NOW()' -p[REDACTED:secret]",
        ),
    ] {
        assert_eq!(label(input), want, "{input}");
    }
    for keep in [
        "docker login --username bob --password-stdin < f",
        "cmd --password --verbose",
        "git log -- password x",
        "a--password x ---- --tokens 512 --token-file /run/t",
        "openssl rsa -passin env:KEY_PASS -passout file:/run/pw -in k.pem",
        "keytool -storepass:env STORE_PASS -keypass -v",
        "mysql -u root -p shop --port=3306",
        "ssh -p 2222 host; mysql is up; pg_dump -p 5432",
        "x-storepass y first-pass z nomysql -pfoo",
        "systemctl restart mysql && netstat -plnt; mysql db | tar -pxzf x",
    ] {
        assert_eq!(text(keep), keep);
    }
}

/// Passwords in SQL statements, as databases log them.
#[test]
fn sql_statements_carry_passwords_in_literals() {
    for (input, want) in [
        (
            "LOG:  statement: ALTER ROLE app WITH PASSWORD 'hunter22';",
            "LOG:  statement: ALTER ROLE app WITH PASSWORD '[REDACTED:secret]';",
        ),
        (
            "create user app with encrypted password 'it''s me' valid until '2030-01-01'",
            "create user app with encrypted password '[REDACTED:secret]' valid until '2030-01-01'",
        ),
        (
            "CREATE USER 'app'@'%' IDENTIFIED BY 'pw-1';",
            "CREATE USER 'app'@'%' IDENTIFIED BY '[REDACTED:secret]';",
        ),
        (
            "ALTER USER app IDENTIFIED WITH caching_sha2_password BY 'pw-2'",
            "ALTER USER app IDENTIFIED WITH caching_sha2_password BY '[REDACTED:secret]'",
        ),
        (
            "SET PASSWORD FOR 'app'@'%' = PASSWORD('pw-3');",
            "SET PASSWORD FOR 'app'@'%' = PASSWORD('[REDACTED:secret]');",
        ),
    ] {
        assert_eq!(label(input), want, "{input}");
    }
    for keep in [
        "it's the password's fault 'x'",
        "old_password 'x' and passwordless 'y'",
        "password'x' identified by ''",
        "GRANT SELECT ON t TO 'app'@'%'",
    ] {
        assert_eq!(text(keep), keep);
    }
    // Not closed inside a JSON string: both NDJSON walkers mask it alike
    // (the raw walk reads the line, the other the string alone).
    let line = b"{\"m\":\"key=TE PASSWORD 'x#\"}\n";
    let r = Redactor::new(&EngineSettings::default(), None).unwrap();
    let opts = Options::default();
    let (mut raw, mut parsed) = (Vec::new(), Vec::new());
    r.session(&opts, None).ndjson_line(line, &mut raw).unwrap();
    r.session(&opts, None)
        .ndjson_line_parsed(line, &mut parsed)
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&raw),
        String::from_utf8_lossy(&parsed)
    );
    assert!(!raw.windows(2).any(|w| w == b"x#"));
}

/// A pair named by the pair before it, in text: XML configuration, AWS
/// tags or a container's environment printed as JSON, YAML's flow style.
#[test]
fn a_pair_named_by_the_pair_before_it_is_redacted_in_text() {
    for (input, want) in [
        (
            r#"<add key="ApiPassword" value="s3cr3t"/>"#,
            r#"<add key="ApiPassword" value="[REDACTED:secret]"/>"#,
        ),
        (
            r#"<entry key='db.password' value='pw 1'/>"#,
            r#"<entry key='db.password' value='[REDACTED:secret]'/>"#,
        ),
        (
            r#"env={"Name": "DB_PASSWORD", "Value": "hunter2"}"#,
            r#"env={"Name": "DB_PASSWORD", "Value": "[REDACTED:secret]"}"#,
        ),
        (
            r#"msg={"ParameterKey":"AdminPassword","ParameterValue":"pw"}"#,
            r#"msg={"ParameterKey":"AdminPassword","ParameterValue":"[REDACTED:secret]"}"#,
        ),
        (
            "env: [{name: LOG_LEVEL, value: debug}, {name: API_KEY, value: k-123}]",
            "env: [{name: LOG_LEVEL, value: debug}, {name: API_KEY, value: [REDACTED:secret]}]",
        ),
    ] {
        assert_eq!(label(input), want, "{input}");
    }
    for keep in [
        r#"<add key="LogLevel" value="debug"/>"#,
        r#"{"envName": "DB_PASSWORD", "value": "x"} {"name": "DB_PASSWORD"} {"value": "y"}"#,
        r#"["name=DB_PASSWORD", "value=x"]"#,
        r#"{"name": "password", "newValue": "z", "value": null}"#,
    ] {
        assert_eq!(text(keep), keep);
    }
    // The NDJSON walkers agree on it: the line read whole (its pair
    // across strings sends it to the parse) and each string alone.
    let line = "{\"m\":\"name=API_KEY value=k-1\",\"name\":\"TOKEN_SECRET\",\"value\":\"v\"}\n";
    let (out, _) = redact(Format::Ndjson, line, &Options::default());
    assert_eq!(
        out,
        "{\"m\":\"name=API_KEY value=***\",\"name\":\"TOKEN_SECRET\",\"value\":\"*\"}\n"
    );
}

/// A YAML-style line's plain value may hold spaces: all of it is the
/// secret. Elsewhere a bare value is one word.
#[test]
fn yaml_lines_hold_values_with_spaces() {
    for (input, want) in [
        (
            "password: correct horse battery staple",
            "password: [REDACTED:secret]",
        ),
        (
            "  - client_secret:\tsplit words  # rotated",
            "  - client_secret:\t[REDACTED:secret]  # rotated",
        ),
        (
            "login password: two words",
            "login password: [REDACTED:secret] words",
        ),
        ("password=two words", "password=[REDACTED:secret] words"),
        (
            "at password: a b\npassword: c d\n",
            "at password: [REDACTED:secret] b\npassword: [REDACTED:secret]\n",
        ),
        (
            "x \"password: e f\" y",
            "x \"password: [REDACTED:secret]\" y",
        ),
    ] {
        assert_eq!(label(input), want, "{input}");
    }
    // A JSON key is no YAML name; an escaped string's close stays.
    assert_eq!(
        label(r#"{"password": 12345, "user": "bob"}"#),
        r#"{"password": [REDACTED:secret], "user": "bob"}"#
    );
    assert_eq!(
        label(r#"{"log":"{\"msg\":\"password: correct horse\"}"}"#),
        r#"{"log":"{\"msg\":\"password: [REDACTED:secret]\"}"}"#
    );
    let (out, _) = redact(
        Format::Ndjson,
        "{\"msg\":\"login password='hunter2\",\"user\":\"o'brien\"}\n",
        &Options::default(),
    );
    assert!(!out.contains("hunter2"), "{out}");
    // A JSON string's text starts a line, whichever walker reads it.
    for format in [Format::Ndjson, Format::Json] {
        let (out, _) = redact(
            format,
            "{\"m\":\"password: a b  \",\"n\":1}\n",
            &Options::default(),
        );
        assert_eq!(
            out.trim_end(),
            "{\"m\":\"password: ***  \",\"n\":1}",
            "{format:?}"
        );
    }
}

/// A Kubernetes environment entry printed as YAML names its value on the
/// line before it: masked whether the two lines come in one block, in
/// two (streamed, cut between them) or one at a time (with a budget).
#[test]
fn yaml_pairs_on_two_lines_are_redacted() {
    let input = "env:\n  - name: LOG_LEVEL\n    value: debug\n  - name: DB_PASSWORD\n    value: \"hunter 2\"\n  - name: card_number\n    value: 4111 1111 1111 1111 # test\n  - name: API_KEY\n    valueFrom: x\n  - value: y\n";
    let want = "env:\n  - name: LOG_LEVEL\n    value: debug\n  - name: DB_PASSWORD\n    value: \"********\"\n  - name: card_number\n    value: **** **** **** 1111 # test\n  - name: API_KEY\n    valueFrom: x\n  - value: y\n";
    assert_eq!(text(input), want);
    assert_eq!(redact(Format::Text, input, &budgeted()).0, want);
    let cut = input.find("    value: \"hunter").unwrap();
    assert_eq!(streamed(Format::Text, input, 1 << 16, cut), want);
    // Off with its type.
    let opts = Options::default().with_detectors(Some("pan")).unwrap();
    assert!(redact(Format::Text, input, &opts).0.contains("hunter 2"));
    // The whole value is the secret, a card in it too; a quote escaped
    // inside is no close; a vault token is kept; a card field's value is
    // left to the card's own detector (`tokenize` takes only cards).
    let token = crate::vault::token::Token::random().into_string();
    let more = format!(
        "- name: DB_PASSWORD\n  value: 4111 1111 1111 1111 hunter2\n- name: API_KEY\n  value: \"ab\\\"cd\"\n- name: SECRET\n  value: {token}\n- name: card_number\n  value: n/a\n"
    );
    let want = format!(
        "- name: DB_PASSWORD\n  value: [REDACTED:secret]\n- name: API_KEY\n  value: \"[REDACTED:secret]\"\n- name: SECRET\n  value: {token}\n- name: card_number\n  value: n/a\n"
    );
    assert_eq!(label(&more), want);
    let opts = Options::default()
        .with_action(Kind::Pan, "tokenize")
        .unwrap();
    assert!(redact(Format::Text, &more, &opts).0.contains("value: n/a"));
}

/// Block scalars under a secret's name (a Secret's `stringData`, a
/// chart's values): the lines indented under the key are the secret,
/// masked whether they come in one block, cut between blocks, or one at
/// a time; the block ends at the first line not indented under its key.
#[test]
fn yaml_block_scalars_under_a_secret_name_are_redacted() {
    let input = "stringData:\n  password: |-\n    hunter2 horse\n\n    second line\n  username: bob\n  notes: |\n    public\n  - api_key: > # folded\n      k-1\n      k-2\nnext: 1\n";
    let want = "stringData:\n  password: [REDACTED:secret]\n    [REDACTED:secret]\n\n    [REDACTED:secret]\n  username: bob\n  notes: |\n    public\n  - api_key: [REDACTED:secret] # folded\n      [REDACTED:secret]\n      [REDACTED:secret]\nnext: 1\n";
    assert_eq!(label(input), want);
    let masked = text(input);
    for secret in ["hunter2", "second", "k-1", "k-2"] {
        assert!(!masked.contains(secret), "{masked}");
    }
    assert_eq!(redact(Format::Text, input, &budgeted()).0, masked);
    for cut in ["    second", "  username", "      k-2"] {
        let at = input.find(cut).unwrap();
        assert_eq!(
            streamed(Format::Text, input, 1 << 16, at),
            masked,
            "cut before {cut:?}"
        );
    }
    // A log line's pair whose value is a block: up to the next line that
    // is not indented.
    let log = "12:00 INFO config password: |\n  s3cret\n12:01 INFO ok\n";
    assert_eq!(
        label(log),
        "12:00 INFO config password: [REDACTED:secret]\n  [REDACTED:secret]\n12:01 INFO ok\n"
    );
    // A header inside a block carried from the text before opens no block
    // of its own: the outer block goes on past the inner one.
    let nested = "  app_secret: |\n    db:\n      password: |\n        p@ss\n    signing_material: QUJD\n  next: 1\n";
    for out in [text(nested), redact(Format::Text, nested, &budgeted()).0] {
        assert!(!out.contains("QUJD") && !out.contains("p@ss"), "{out}");
        assert!(out.ends_with("  next: 1\n"), "{out}");
    }
    // Not YAML's `:`: no block (Ruby's `=>` breaking a hash across lines).
    let ruby = "{\"password\"=> >\n  \"public\"}\n";
    assert!(text(ruby).contains("\"public\""));
    // NDJSON lines carry none: a line that is no JSON opens no block over
    // the lines after it.
    let ndjson = "password: |\n{\"a\":\"b\"}\n   kept ann@shop.io\n";
    for opts in [Options::default(), budgeted()] {
        let (out, _) = redact(Format::Ndjson, ndjson, &opts);
        assert!(out.contains("   kept *"), "{out}");
    }
    // In a JSON string too, within the string.
    let doc = r#"{"config": "password: |\n  s3cret\nmode: 1"}"#;
    let (out, _) = redact(Format::Json, doc, &Options::default());
    assert!(!out.contains("s3cret") && out.contains("mode: 1"), "{out}");
}

/// JSON escaped twice (an application's JSON message quoting a JSON
/// body, in a container runtime's JSON log line read as text) or three
/// times: names and values are read through their backslashes, which stay.
#[test]
fn json_escaped_twice_or_three_times_is_read() {
    let line = r#"{"log":"{\"msg\":\"body={\\\"password\\\":\\\"hunter 2\\\",\\\"cvv\\\":\\\"123\\\"}\"}\n"}"#;
    let want = r#"{"log":"{\"msg\":\"body={\\\"password\\\":\\\"[REDACTED:secret]\\\",\\\"cvv\\\":\\\"[REDACTED:cvv]\\\"}\"}\n"}"#;
    assert_eq!(label(line), want);
    assert_eq!(
        text(line),
        line.replace("hunter 2", "********")
            .replace("\\\"123", "\\\"***")
    );
    let three = r#"x={\\\\\\\"api_key\\\\\\\":\\\\\\\"k-1\\\\\\\", \\\\\\\"name\\\\\\\": \\\\\\\"DB_PASSWORD\\\\\\\", \\\\\\\"value\\\\\\\": \\\\\\\"v-2\\\\\\\"}"#;
    assert_eq!(
        label(three),
        three
            .replace("k-1", "[REDACTED:secret]")
            .replace("v-2", "[REDACTED:secret]")
    );
}

/// Magnetic-stripe tracks: track 1's card was glued to its format code
/// and passed whole; track 2's expiry, service code and discretionary data
/// (the PIN verification value, the stripe's security code) passed beside
/// a masked card.
#[test]
fn track_data_is_redacted_whole_but_the_cards_last_four() {
    let cases = [
        (
            "swipe %B4111111111111111^DOE/JOHN^2512101123456789012345678?;4111111111111111=2512101123456789? end",
            "swipe %B[REDACTED:pan][REDACTED:secret];[REDACTED:pan][REDACTED:secret] end",
        ),
        (
            r#"magstripe="B5555555555554444^SMITH/J^25121010000000000000""#,
            r#"magstripe="B[REDACTED:pan][REDACTED:secret]""#,
        ),
        (
            "track2=;4111111111111111=25121011234567890123?",
            "track2=;[REDACTED:pan][REDACTED:secret]",
        ),
        (
            "tag 57 13 4111111111111111D25121011234567890123F ok",
            "tag 57 13 [REDACTED:pan][REDACTED:secret] ok",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(label(input), want, "{input}");
    }
    let masked = text("t=;4111111111111111=25121011234567890123?");
    assert_eq!(masked, "t=;************1111**********************");
    // Cut short after the card, or without the format code: the card is
    // still found, and what follows it of the track.
    for (input, want) in [
        ("%B4111111111111111^", "%B************1111*"),
        ("B4111111111111111^ rest", "B************1111* rest"),
        (
            "t1=4111111111111111^DOE/J^2512101123?",
            "t1=************1111******************",
        ),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
    for keep in [
        "order 12345678901234=1234567 ok",     // no card before the `=`
        "x AB4111111111111111^y^z",            // `B` inside a word
        "sum 4111111111111112=25121011234 ok", // fails Luhn
    ] {
        assert_eq!(text(keep), keep);
    }
    for name in ["track2", "Track1", "track_2_data", "trackData", "magstripe"] {
        let line = format!("{{\"{name}\":\"x9z\",\"m\":\"x\"}}\n");
        let (out, _) = redact(Format::Ndjson, &line, &Options::default());
        assert!(!out.contains("x9z"), "{name}: {out}");
    }
}

/// Regressions from review: each of these once let data through.
#[test]
fn nothing_slips_through_tokens_overlaps_floats_or_field_names() {
    let real = crate::vault::token::Token::random().into_string();
    let kept = format!("keep {real} ok");
    assert_eq!(text(&kept), kept, "a real vault token is kept");
    assert_eq!(
        text("card tok_4111111111111111"),
        "card tok_************1111"
    );
    // Overlapping findings merge: no part of either stays in the clear.
    let out = text("password=ab-4111 1111 1111 1111 end");
    assert!(!out.contains("1111 1111"), "{out}");
    // A card as a whole JSON float.
    let (out, _) = redact(
        Format::Json,
        r#"{"c":4111111111111111.0}"#,
        &Options::default(),
    );
    assert!(!out.contains("411111"), "{out}");
    // Field rules: prefixed names, nested values, tokens only in card fields.
    let (out, _) = redact(
        Format::Json,
        r#"{"db_password":"x","password":["hunter2"],"cvv":[123],"pinblock":"0412345678901234","api_key":"tok_anything-16-chars"}"#,
        &Options::default(),
    );
    for leak in ["hunter2", "123", "0412", "anything"] {
        assert!(!out.contains(leak), "{leak} in {out}");
    }
    // Names under a field rule are read like any other: the rule says
    // what the values hold.
    for doc in [
        r#"{"password":{"4111111111111111":"x","bob@example.com":[1]}}"#,
        r#"{"m":"\u0041","cvv":[{"k 4111111111111111":{"bob@example.com":1}}]}"#,
    ] {
        for format in [Format::Json, Format::Ndjson] {
            let (out, f) = redact(format, doc, &Options::default());
            assert!(!out.contains("411111") && !out.contains("bob@"), "{out}");
            assert!(f.header_value().contains("pan=1"), "{out}");
            serde_json::from_str::<serde_json::Value>(&out).unwrap();
        }
    }
    assert_eq!(
        label("DB_PASSWORD=hunter2 x"),
        "DB_PASSWORD=[REDACTED:secret] x"
    );
    assert_eq!(
        label(r#"password: "correct horse battery" ok"#),
        r#"password: "[REDACTED:secret]" ok"#
    );
}

#[test]
fn reports_and_option_errors_never_echo_input() {
    let opts = Options {
        report: true,
        ..Default::default()
    };
    let (_, f) = redact(Format::Json, r#"{"4111111111111111":"a@b.io"}"#, &opts);
    assert!(!f.report().to_string().contains("4111"), "{}", f.report());
    let e = Options::default()
        .with_detectors(Some("4111111111111111"))
        .unwrap_err();
    assert!(!e.0.contains("4111"), "{e}");
    let e = Options::default()
        .with_actions(Some("pan:4111111111111111"))
        .unwrap_err();
    assert!(!e.0.contains("4111"), "{e}");
}

#[test]
fn a_bare_value_runs_on_past_a_semicolon_or_comma_that_starts_no_pair() {
    for (line, want) in [
        (
            "login password=ab;cd user=bob",
            "login password=***** user=bob",
        ),
        (
            "Server=db;Password=p4ss;w0rd;Database=x",
            "Server=db;Password=*********;Database=x",
        ),
        ("pwd=a,b,c", "pwd=*****"),
        ("(password=ab;cd)", "(password=*****)"),
        ("{\"m\":\"password=ab;cd\"}", "{\"m\":\"password=*****\"}"),
        // What starts another pair, or follows a space, is not the value.
        ("password=ab;path=/", "password=**;path=/"),
        ("password=ab,user:bob", "password=**,user:bob"),
        ("password=ab; path=/", "password=**; path=/"),
        ("{password=ab, user=bob}", "{password=**, user=bob}"),
        ("password=ab;f(x)", "password=**;f(x)"),
        ("password=ab;", "password=**;"),
        ("password=ab,\"n\":1", "password=**,\"n\":1"),
    ] {
        assert_eq!(text(line), want, "{line}");
    }
}

#[test]
fn hibernate_binds_follow_their_statement() {
    let t = "2026-12-03 10:00:01 TRACE o.h.t.d.s.BasicBinder - ";
    // One line: the statement names each bind.
    let log = format!(
        "2026-12-03 10:00:01 DEBUG org.hibernate.SQL - insert into users (email, password_hash, id) values (?, ?, ?)\n\
         {t}binding parameter [1] as [VARCHAR] - [ann@shop.io]\n\
         {t}binding parameter [2] as [VARCHAR] - [$2a$10$hunter2]\n\
         {t}binding parameter [3] as [BIGINT] - [42]\n"
    );
    let out = text(&log);
    assert!(!out.contains("hunter2") && !out.contains("ann@"), "{out}");
    assert!(out.ends_with("- [42]\n"), "{out}");
    // Formatted over indented lines, Hibernate 6's spelling, and a bind
    // the statement does not hold.
    let log = "Hibernate: \n    update\n        users \n    set\n        nickname=?,\n        password=? \n    where\n        id=?\n\
               binding parameter (1:VARCHAR) <- [annie]\n\
               binding parameter (2:VARCHAR) <- [hunter2]\n\
               binding parameter (3:BIGINT) <- [7]\n\
               binding parameter (4:BIGINT) <- [8]\n";
    let out = text(log);
    assert!(
        out.contains("<- [annie]") && out.contains("<- [7]"),
        "{out}"
    );
    assert!(!out.contains("hunter2") && !out.contains("<- [8]"), "{out}");
    // No statement seen, another thread's statement logged between one
    // and its binds, or a row that does not count as its columns: the
    // value is masked.
    for log in [
        "update users set password=? where id=?\nselect * from orders where note=?\n\
         binding parameter [1] as [VARCHAR] - [hunter2]\n"
            .to_owned(),
        format!("{t}binding parameter [1] as [VARCHAR] - [hunter2]\n"),
        "insert into t (a, password) values (?, now(), ?)\nbinding parameter [1] as [VARCHAR] - [hunter2]\n".to_owned(),
    ] {
        assert!(!text(&log).contains("hunter2"), "{log}");
    }
    let long = format!(
        "update users set nickname=? where id=?\n{}\nbinding parameter [1] as [VARCHAR] - [hunter2]\n",
        "x".repeat(300)
    );
    let out = streamed(Format::Text, &long, 200, 64);
    assert!(
        out.contains("line-too-long") && !out.contains("hunter2"),
        "{out}"
    );
    // Without that line, the statement keeps the bind.
    let short = long.replace(&"x".repeat(300), "x");
    assert!(streamed(Format::Text, &short, 200, 64).contains("[hunter2]"));
    // Statements and binds that could not be read, or only in part: the
    // value is masked, and the next line goes on.
    for log in [
        // A formatted statement's first line last in its block (a budget
        // reads each line alone), after a statement that keeps bind 1.
        "o.h.SQL - select u.id from users u where u.nickname=?\n\
         binding parameter [1] as [VARCHAR] - [annie]\n\
         o.h.SQL - \n    update\n        users\n    set\n        password=?\n    where\n        id=?\n\
         binding parameter [1] as [VARCHAR] - [hunter2]\nnext\n",
        // A logger's name cut to `SQL`, colors around the verb, a quote
        // in the line's prefix, a bind indented.
        "select * from t where nickname=?\nSQL - \n    update users set password=? where id=?\n\
         binding parameter [1] as [VARCHAR] - [hunter2]\nnext\n",
        "select * from t where nickname=?\n\x1b[34mupdate\x1b[0m users set password=?\n\
         binding parameter [1] as [VARCHAR] - [hunter2]\nnext\n",
        "select * from t where nickname=?\n[o'brien] Hibernate: update users set password=?\n\
         binding parameter [1] as [VARCHAR] - [hunter2]\nnext\n",
        "Hibernate:update users set password=? where id=?\n  \
         binding parameter [1] as [VARCHAR] - [hunter2]\nnext\n",
        // Hibernate 4's bare value, a layout not known, a value over lines.
        "binding parameter [2] as [VARCHAR] - hunter2\nnext\n",
        "binding parameter [2] is hunter2\nnext\n",
        "binding parameter [2] as [VARCHAR] - [hunter2\nhunter2\nhunter2]\nnext\n",
    ] {
        for opts in [Options::default(), budgeted()] {
            let (out, _) = redact(Format::Text, log, &opts);
            assert!(
                !out.contains("hunter2") && out.ends_with("\nnext\n"),
                "{log} -> {out}"
            );
        }
    }
    // `?`s are counted from the statement's verb (Logback's `:?` for a
    // caller it was not given), `||?` among them; a value that ran on
    // ends at the next bind; a column the field rules name masks its
    // value, whatever its type; a bind after words that only look like
    // one.
    let t = "TRACE o.h.t.d.s.BasicBinder:? - binding parameter";
    for (log, kept) in [
        (
            format!(
                "DEBUG org.hibernate.SQL:? - update users set nickname=?, password=? where id=?\n\
             {t} [1] as [VARCHAR] - [annie]\n{t} [2] as [VARCHAR] - [hunter2]\n"
            ),
            "[annie]",
        ),
        (
            format!(
                "Hibernate: update users set log=(log||?), password=?, nickname=? where id=?\n\
             {t} [1] as [VARCHAR] - [annie]\n{t} [2] as [VARCHAR] - [hunter2]\n"
            ),
            "(log||?)",
        ),
        (
            format!(
                "Hibernate: update users set note=?, password=? where id=?\n\
             {t} [1] as [VARCHAR] - [annie\n{t} [2] as [VARCHAR] - [hunter2]\n"
            ),
            "[annie",
        ),
        (
            format!(
                "Hibernate: update users set ssn=? where id=?\n{t} [1] as [VARCHAR] - [hunter2]\n{t} [2] as [BIGINT] - [7]\n"
            ),
            "[7]",
        ),
        (
            format!(
                "Hibernate: update users set password=? where id=?\n{t} of type X; binding parameter [1] as [VARCHAR] - [hunter2]\n"
            ),
            "type X",
        ),
    ] {
        let out = text(&log);
        assert!(
            !out.contains("hunter2") && out.contains(kept),
            "{log} -> {out}"
        );
    }
    // A formatted statement read a line at a time keeps its binds too.
    let log = "o.h.SQL - \n    update users\n    set nickname=?\nbinding parameter [1] as [VARCHAR] - [annie]\n";
    assert_eq!(redact(Format::Text, log, &budgeted()).0, log);
    // In JSON strings no statement is read: every bind is masked.
    let ndjson = "{\"message\":\"update users set nickname=? where id=?\"}\n\
                  {\"message\":\"binding parameter [1] as [VARCHAR] - [hunter2]\",\"x\":\"[y]\"}\n";
    let (out, _) = redact(Format::Ndjson, ndjson, &Options::default());
    assert!(
        !out.contains("hunter2") && out.contains("\"x\":\"[y]\""),
        "{out}"
    );
    let ndjson = "{\"m\":\"binding parameter [1] as [VARCHAR] - [p4\\\"ss]\"}\n\
                  binding parameter [1] as [VARCHAR] - [\"p4ss\"]\n\
                  {\"m\":\"binding parameter of X; binding parameter [1] as [X] - [p4ss]\"}\n";
    let (out, _) = redact(Format::Ndjson, ndjson, &Options::default());
    assert!(!out.contains("ss"), "{out}");
    // Nulls stay; lines that only look like binds or statements stay.
    for line in [
        "insert into u (password) values (?)\nbinding parameter [1] as [VARCHAR] - [null]\n",
        "GET /a?b=1 binding parameter of the request\n",
        "what? binding parameter [x] as [VARCHAR] - [y]\n",
    ] {
        assert_eq!(text(line), line);
    }
}

/// The raw NDJSON walker against the `Value` walker, line by line: the
/// same redacted document (spacing aside) and the same report, on shapes
/// chosen to reach every branch of the raw walker, and on the corpus.
#[test]
fn the_raw_walker_agrees_with_the_value_walker() {
    let r = Redactor::new(
        &EngineSettings::default(),
        Some(HashKey::new("t1", &[9; 32])),
    )
    .unwrap();
    let token = crate::vault::token::Token::random().into_string();
    let mut lines: Vec<String> = [
        r#"{"a": "mail bob@example.com now", "n": 4111111111111111, "f": 4111111111111111.0}"#,
        r#"{"e": 4.111111111111111e15, "neg": -4111111111111111, "small": 12, "x": 1.5}"#,
        r#"  [ "4111 1111 1111 1111" , {"cvv": 123}, [ {"password": ["a", 1, null, true]} ] ]  "#,
        r#"{"card": {"number": "4111111111111111", "exp": {"m": 1, "y": 2030}}, "ok": false}"#,
        r#"{"cardNumber": "TOKEN", "pan": null, "ssn": "078-05-1120"}"#,
        r#"{"k bob@example.com": "v", "api_key": "abc", "note": "password=hunter2 ok"}"#,
        r#"{"password": {"4111111111111111": "x", "b bob@example.com": [1, {"078-05-1120": null}]}}"#,
        r#"{"deep": {"a": [{"b": {"c": "078-05-1120 and +44 20 7946 0958"}}]}}"#,
        r#""4111111111111111""#,
        r#"4111111111111111"#,
        r#"{"iban": "GB82 WEST 1234 5698 7654 32", "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"}"#,
        r#"{"empty": {}, "none": [], "unicode": "é bob@example.com ✓"}"#,
        r#"{"not json": 4111111111111111"#,
        r#"{"a":1}{"b":2} 4111111111111111"#,
        "{\"ctl\": \"tab\there 4111111111111111\"}",
        // Cards only as a value: no digit run for the raw scan to find.
        r#"{"e": 4.111111111111111e15}"#,
        r#"[4111111111111111E0, 41111111111111.11e2]"#,
        r#"62e17"#,
        r#"{"a": 4111111111111110.9, "b": 4111111111111111.5, "c": [-4111111111111111]}"#,
        r#"{"ts": 1732875600.123456, "big": 12345678901.5}"#,
        // Numbers in a card field: a card by their digits, as written or
        // printed back (the fraction's digits are no group of the card).
        r#"{"cardNumber": 4111111111111111e-3, "cardNo": 4111111111111.1110}"#,
        r#"{"cardNumber": -4111111111111111, "ccNumber": 4111111111111111.0, "cardNo": true}"#,
        r#"{"cardNumber": 1.50, "creditCard": 1e2}"#,
        // JSON that serde_json refuses.
        r#"{"cardNumber": 1e400}"#,
        r#"{"cvv": 123, "x": 1e400, "n": 4111111111111111e0}"#,
        r#"{"s": "\ud800", "n": 4111111111111111e0}"#,
        // Evidence or a value across strings, as a raw scan of the line
        // reads it: no pair under a key that is not the field rule's
        // name, and a single-quoted value from one string into the next
        // (the line takes the `Value` walk).
        r#"{")name":"DB_PASSWORD","value":"x","m":"password: a b  "}"#,
        r#"{"a":"password='x","b":"y'","c":"PASSWORD 'p","d":"q'"}"#,
        r#"{"msg":"login password='hunter2","user":"o'brien"}"#,
        r#"{"Name":"DB_PASSWORD","Value=x":1}"#,
        // JDBC binds, masked in strings whole.
        r#"{"m":"binding parameter [1] as [VARCHAR] - [p]","n":"[q]"}"#,
        r#"{"m":"binding parameter (2:VARCHAR) <- [p] ]","n":["binding parameter [3] as [X] - [a]b"]}"#,
        r#"binding parameter [1] as [VARCHAR] - ["p"]"#,
        r#"{"m":"binding parameter of X, binding parameter [1] as [X] - [p]"}"#,
        // A bare value running on past a `;` stops at an escape either way.
        r#"{"m":"password=a;b\nc","n":"pwd=x;y","o":"secret=p;q\"r"}"#,
    ]
    .iter()
    .map(|l| l.replace("TOKEN", &token))
    .collect();
    let corpus = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/eval/corpus/events.ndjson"),
    )
    .unwrap_or_default();
    lines.extend(corpus.lines().take(2000).map(str::to_owned));
    let option_sets = [
        Options::default(),
        Options::default()
            .with_actions(Some("pan:label,email:hash,secret:label"))
            .unwrap(),
        Options {
            report: true,
            ..Options::default()
        },
    ];
    for opts in &option_sets {
        for line in &lines {
            let line = format!("{line}\n");
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let mut raw = r.session(opts, None);
            raw.ndjson_line(line.as_bytes(), &mut a).unwrap();
            let mut walked = r.session(opts, None);
            walked.ndjson_line_parsed(line.as_bytes(), &mut b).unwrap();
            let parsed = |v: &[u8]| serde_json::from_slice::<serde_json::Value>(v).ok();
            match (parsed(&a), parsed(&b)) {
                (Some(x), Some(y)) => assert_eq!(x, y, "{line}"),
                _ => assert_eq!(a, b, "{line}"),
            }
            assert_eq!(raw.findings, walked.findings, "{line}");
        }
    }
}

#[test]
fn percent_encoded_emails_are_found() {
    for (line, want) in [
        (
            "GET /users?to=ann%40shop.io&page=2 200",
            "GET /users?to=*************&page=2 200",
        ),
        (
            "cb=https%3A%2F%2Fx.io%2F%3Fu%3Dbo.b%2Bq%40mail.example.org ok",
            "cb=https%3A%2F%2Fx.io%2F%3Fu%3D*************************** ok",
        ),
    ] {
        assert_eq!(text(line), want, "{line}");
    }
    // Long runs of the literals cost linear time and find nothing: no
    // local part is over 64 characters, no authority ends.
    let runs = format!("{} {}", "a%40".repeat(20_000), "://:".repeat(20_000));
    assert_eq!(text(&runs), runs);
    let long_local = format!("{}%40shop.io", "a".repeat(200));
    assert_eq!(text(&long_local), long_local);
    // Look-alikes stay: a percentage, no domain, no local part, no TLD.
    for line in [
        "cpu at 100%40 ok",
        "x%40 y",
        "%40shop.io",
        "ann%40localhost",
        "a%40b.c1",
    ] {
        assert_eq!(text(line), line);
    }
}

/// A name/value pair says in its name what its value holds: Kubernetes'
/// and ECS's environment, AWS tags, CloudFormation parameters. The value
/// is redacted whatever it looks like, in either order, as NDJSON (lines
/// the raw walker would otherwise take) and as one document; other pairs
/// and the names themselves are kept.
#[test]
fn a_name_value_pair_naming_a_secret_is_redacted() {
    let line = r#"{"env":[{"name":"DB_PASSWORD","value":"hunter2"},{"name":"LOG_LEVEL","value":"debug"},{"value":"s3cr3t-Tok","name":"stripeApiKey"}],"tags":[{"Key":"card_number","Value":"4111111111111111"}],"params":[{"ParameterKey":"AdminPassword","ParameterValue":"pw 1"}],"n":"to ann@shop.io"}"#;
    let want = r#"{"env":[{"name":"DB_PASSWORD","value":"*******"},{"name":"LOG_LEVEL","value":"debug"},{"value":"**********","name":"stripeApiKey"}],"tags":[{"Key":"card_number","Value":"************1111"}],"params":[{"ParameterKey":"AdminPassword","ParameterValue":"****"}],"n":"to ***********"}"#;
    for format in [Format::Ndjson, Format::Json] {
        let (out, f) = redact(format, &format!("{line}\n"), &Options::default());
        assert_eq!(out.trim_end(), want, "{format:?}");
        assert_eq!(f.header_value(), "pan=1, email=1, secret=3", "{format:?}");
    }
    // In capitals too.
    let (out, _) = redact(
        Format::Ndjson,
        "{\"NAME\":\"DB_PASSWORD\",\"VALUE\":\"hunter2\"}\n",
        &Options::default(),
    );
    assert_eq!(out, "{\"NAME\":\"DB_PASSWORD\",\"VALUE\":\"*******\"}\n");
    // With no other finding on the line, the pair alone keeps it from
    // passing through raw.
    let alone = "{\"name\": \"DB_PASSWORD\", \"value\": \"hunter2\"}\n";
    let (out, _) = redact(Format::Ndjson, alone, &Options::default());
    assert_eq!(out, "{\"name\":\"DB_PASSWORD\",\"value\":\"*******\"}\n");
    // Names that name nothing sensitive, and a `name` that is no string,
    // change nothing.
    for kept in [
        "{\"name\": \"LOG_LEVEL\", \"value\": \"debug\"}\n",
        "{\"name\": {\"password\": 1}, \"value\": \"debug\"}\n",
        "{\"label\": \"DB_PASSWORD\", \"value\": \"debug\"}\n",
    ] {
        let (out, _) = redact(Format::Ndjson, kept, &Options::default());
        assert!(out.contains("debug"), "{kept}: {out}");
    }
    // A parse keeps only the last of duplicate keys: a pair whose name was
    // overwritten is caught by counting, and the line or document is
    // masked whole (fail closed). The name's own value is then what a
    // walk sees, and its value would have passed.
    let lost = "{\"name\":\"DB_PASSWORD\",\"value\":\"hunter2\",\"name\":\"x\"}\n";
    let (out, f) = redact(Format::Ndjson, lost, &Options::default());
    assert_eq!(out, format!("{}\n", "*".repeat(lost.len() - 1)));
    assert_eq!(f.header_value(), "secret=1");
    let (out, _) = redact(Format::Json, lost, &Options::default());
    assert_eq!(out, "\"[REDACTED:secret]\"");
    // A disabled type is not looked for, duplicated or not.
    let opts = Options::default().with_detectors(Some("pan")).unwrap();
    let (out, _) = redact(Format::Ndjson, lost, &opts);
    assert!(out.contains("hunter2"), "{out}");
    // A report names the value's path.
    let opts = Options {
        report: true,
        ..Default::default()
    };
    let (_, f) = redact(Format::Ndjson, alone, &opts);
    assert_eq!(f.report()["paths"]["$.value"], "secret");
}

/// A card typed with spaces and put in a URL by `encodeURIComponent` has
/// `%20` gaps, or a `%20` before it: to the digit scan those are runs like
/// `201111`. Masked with the gaps kept, and hashed (as tokenized) by the
/// card's own digits, not the escapes' `2` and `0`.
#[test]
fn cards_with_percent_encoded_spaces_are_found() {
    assert_eq!(
        text("GET /pay?card=4111%201111%201111%201111&cvc=1 200\n"),
        "GET /pay?card=****%20****%20****%201111&cvc=1 200\n"
    );
    assert_eq!(
        text("q=%204111111111111111%20&n=order%2012345%205500%200055%205555%205559\n"),
        "q=%20************1111%20&n=order%2012345%20****%20****%20****%205559\n"
    );
    // After other escapes, whose hex digits are not the card's; two
    // encoded spaces, or an encoded and a plain gap, between groups.
    for (input, want) in [
        (
            "data=%7B%22card%22%3A%224111%201111%201111%201111%22%7D\n",
            "data=%7B%22card%22%3A%22****%20****%20****%201111%22%7D\n",
        ),
        (
            "q=card%3D4111111111111111&x\n",
            "q=card%3D************1111&x\n",
        ),
        ("(%284111111111111111%29)\n", "(%28************1111%29)\n"),
        (
            "c=4111%20%201111%20%201111%20%201111\n",
            "c=****%20%20****%20%20****%20%201111\n",
        ),
        ("c=4111%201111 1111-1111\n", "c=****%20**** ****-1111\n"),
    ] {
        assert_eq!(text(input), want);
    }
    // However long the run, wherever the span a run is read in cuts it, a
    // card is found: a card cut off at a span's end is looked at again.
    for filler in 0..60 {
        let long = format!(
            "q=4111%201111%201111%201111%20{}5555%205555%205555%204444\n",
            "1%20".repeat(filler)
        );
        let out = text(&long);
        assert!(out.ends_with("****%20****%20****%204444\n"), "{out}");
        assert!(out.starts_with("q=****%20****%20****%201111%20"), "{out}");
        let long = format!("q={}5555%205555%205555%204444\n", "12%20".repeat(filler));
        assert!(
            text(&long).ends_with("****%20****%20****%204444\n"),
            "{filler}"
        );
        // The longest a card can be written: a digit a group, each gap
        // two encoded spaces (127 bytes for 19 digits; 91 here).
        let spread = |card: &str| {
            card.chars()
                .map(String::from)
                .collect::<Vec<_>>()
                .join("%20%20")
        };
        let long = format!(
            "q={}{}\n",
            "12%20".repeat(filler),
            spread("5555555555554444")
        );
        let want = format!("{}\n", spread("************4444"));
        assert!(text(&long).ends_with(&want), "{filler}: {}", text(&long));
    }
    // Review cases: a run read again after a card does not reach back into
    // it (the expiry and CVV after it made a Visa with its last group);
    // plain gaps before the first `%20`; a 19-digit card wherever a run
    // is cut; gaps no card has; an escape that decodes to a letter glues.
    for (input, want) in [
        (
            "pay=5555%205555%205555%204444%2012%202028%20109&x\n",
            "pay=****%20****%20****%204444%2012%202028%20109&x\n",
        ),
        ("q=4111 1111%201111%201111\n", "q=**** ****%20****%201111\n"),
        ("q=4111-1111%201111%201111\n", "q=****-****%20****%201111\n"),
        ("q=4111.1111%201111%201111\n", "q=****.****%20****%201111\n"),
        (
            "q=4111\t1111%201111%201111\n",
            "q=****\t****%20****%201111\n",
        ),
        (
            "q=%3D5555..5555..5555..4444\n",
            "q=%3D5555..5555..5555..4444\n",
        ),
        // A run the digit scan reads from further back: read from there
        // too, so the cards of the two do not overlap (a Mastercard of the
        // last three groups and the year, merged into 20 digits).
        (
            "pay=5555 5555 5555 4444 2024%2012\n",
            "pay=**** **** **** 4444 2024%2012\n",
        ),
        (
            "x=1%2099999-4111111111111111%2012\n",
            "x=1%2099999-************1111%2012\n",
        ),
        (
            "x=99999-4111111111111111%2012\n",
            "x=99999-************1111%2012\n",
        ),
        (
            "q=4111\u{a0}1111%201111%201111\n",
            "q=****\u{a0}****%20****%201111\n",
        ),
        ("q=%414111111111111111\n", "q=%414111111111111111\n"),
        // A dash between spaces, as typed into a note, plain or encoded.
        (
            "q=4111 - 1111%20-%201111 - 1111\n",
            "q=**** - ****%20-%20**** - 1111\n",
        ),
        (
            "note=4111%20-%201111%20-%201111%20-%201111\n",
            "note=****%20-%20****%20-%20****%20-%201111\n",
        ),
    ] {
        assert_eq!(text(input), want);
    }
    for filler in [0, 24, 39, 54, 69] {
        let long = format!(
            "q={}4111%201111%201111%201111%20003\n",
            "12%20".repeat(filler)
        );
        let out = text(&long);
        // All 19 digits are the card: its last four are `1003`.
        assert!(out.ends_with("****%20****%20****%20***1%20003\n"), "{out}");
    }
    // A card field holding a card with encoded spaces is a card there too.
    let (out, _) = redact(
        Format::Json,
        r#"{"cardNumber":"4111%201111%201111%201111"}"#,
        &Options::default(),
    );
    assert_eq!(out, r#"{"cardNumber":"****%20****%20****%201111"}"#);
    // Any gap a card in text may have, in a card field too: the card's mask,
    // not the whole value's. What is no card there is masked whole.
    for (field, want) in [
        (
            "4111\u{a0}1111\u{a0}1111\u{a0}1111",
            "****\u{a0}****\u{a0}****\u{a0}1111",
        ),
        ("4111.1111.1111.1111", "****.****.****.1111"),
        ("4111 - 1111 - 1111 - 1111", "**** - **** - **** - 1111"),
        ("4111--1111--1111--1111", "**********************"),
    ] {
        let input = serde_json::json!({ "cardNumber": field }).to_string();
        let (out, _) = redact(Format::Json, &input, &Options::default());
        assert_eq!(
            out,
            serde_json::json!({ "cardNumber": want }).to_string(),
            "{field}"
        );
    }
    // Not cards: sizes, dates, a Luhn failure, a card-shaped end of a
    // longer number, an escape that is not a space.
    for clean in [
        "size%2010%20x%2012\n",
        "from=2024%2001%2002\n",
        "4111%201111%201111%201112\n",
        "99994111%201111%201111%201111\n",
        "4111%2C1111%2C1111%2C1111\n",
        "id=%2D4111111111111111x\n",
    ] {
        assert_eq!(text(clean), clean);
    }
    let line = "{\"url\":\"/pay?card=4111%201111%201111%201111\"}\n";
    assert_eq!(
        redact(Format::Ndjson, line, &Options::default()).0,
        "{\"url\":\"/pay?card=****%20****%20****%201111\"}\n"
    );
    let opts = Options::default().with_actions(Some("pan:hash")).unwrap();
    let hash = |s: &str| redact(Format::Text, s, &opts).0;
    assert_eq!(
        hash("4111%201111%201111%201111"),
        hash("4111 1111 1111 1111")
    );
    assert!(hash("4111%201111%201111%201111").starts_with("[HASH:pan:"));
}

/// `input` streamed through a line splitter of `max` bytes a line, in
/// chunks of `cut` bytes.
fn streamed(format: Format, input: &str, max: usize, cut: usize) -> String {
    let r = Redactor::new(&EngineSettings::default(), None).unwrap();
    let opts = Options::default();
    let mut s = r.session(&opts, None);
    let mut splitter = lines::LineSplitter::new(max);
    let mut out = Vec::new();
    for chunk in input.as_bytes().chunks(cut) {
        splitter
            .push(chunk, |p| s.piece(format, p, &mut out))
            .unwrap();
    }
    splitter.finish(|p| s.piece(format, p, &mut out)).unwrap();
    String::from_utf8(out).unwrap()
}

/// A key split across the strings of one document (a shipper that
/// splits a multi-line message, a key under a field masked unread) is
/// masked to its end marker in every string after its begin, in both
/// walkers; names stay readable.
#[test]
fn a_key_runs_on_across_the_strings_of_a_document() {
    let docs = [
        r#"{"data":["-----BEGIN PRIVATE KEY-----","MIIEvQIBADANBgkqhkiG9w0BAQEFAASC","-----END PRIVATE KEY-----"],"note":"ok 4111111111111111"}"#,
        r#"{"privateKey":"-----BEGIN PRIVATE KEY-----","next":"MIIEvQIBADANBgkqhkiG","end":"-----END PRIVATE KEY-----","note":"ok 4111111111111111"}"#,
        r#"{"m":"x\u0041","data":["-----BEGIN PRIVATE KEY-----","MIIEvQIBADANBgkqhkiG","-----END PRIVATE KEY-----"],"note":"ok 4111111111111111"}"#,
    ];
    for doc in docs {
        for format in [Format::Json, Format::Ndjson] {
            let (out, _) = redact(format, doc, &Options::default());
            assert!(!out.contains("MIIE"), "{out}");
            assert!(out.contains(r#""note":"ok ************1111""#), "{out}");
        }
    }
    // An end marker at a string's end is masked whole.
    let (out, _) = redact(
        Format::Json,
        r#"["-----BEGIN PRIVATE KEY-----","MIIE","-----END PRIVATE KEY-----"]"#,
        &Options::default(),
    );
    assert!(!out.contains('-'), "{out}");
    // Inside an open key, names are masked too (and may end it).
    for doc in [
        r#"{"a":"-----BEGIN PRIVATE KEY-----","b":"MIIEvQIBADANBgkq"}"#,
        r#"{"m":"\u0041","k":"-----BEGIN PRIVATE KEY-----","MIIEvQIBADANBgkq":"-----END PRIVATE KEY-----","n":"ok"}"#,
    ] {
        let (out, _) = redact(Format::Json, doc, &Options::default());
        assert!(!out.contains("MIIE"), "{out}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
    }
    // A repeated name moves a string in the parse (first place, last
    // value): in a document with a key, it is masked whole.
    for doc in [
        r#"{"b":"x","a":"-----BEGIN PRIVATE KEY-----","b":"MIIEvQIBADANBgkq","e":"-----END PRIVATE KEY-----"}"#,
        r#"{"m":"\u0041","a":"-----BEGIN PRIVATE KEY-----","e":"y","b":"MIIEvQIBADANBgkq","e":"-----END PRIVATE KEY-----"}"#,
    ] {
        for format in [Format::Json, Format::Ndjson] {
            let (out, _) = redact(format, doc, &Options::default());
            assert!(!out.contains("MIIE"), "{out}");
        }
    }
    // A begin marker the parse drops with its duplicate key: the
    // document (or line) is masked whole. (An NDJSON line without escapes
    // is walked over its raw bytes, where nothing is dropped.)
    for doc in [
        r#"{"k":"-----BEGIN PRIVATE KEY-----","k":"x","b":"MIIEvQIBADANBgkq"}"#,
        r#"{"m":"\u0041","k":"-----BEGIN PRIVATE KEY\u002d----","k":"x","b":"MIIEvQIBADANBgkq","e":"-----END PRIVATE KEY-----"}"#,
    ] {
        for format in [Format::Json, Format::Ndjson] {
            let (out, f) = redact(format, doc, &Options::default());
            assert!(!out.contains("MIIE"), "{out}");
            if format == Format::Json || doc.contains('\\') {
                assert!(f.header_value().contains("secret=1"), "{out}");
            }
        }
    }
    // A name that begins a key: its value (and what follows) is masked;
    // under a field rule too. (A PEM key's marker is a field
    // name of its own, `…privatekey`; an OpenPGP one's is not.)
    for doc in [
        r#"{"-----BEGIN PGP PRIVATE KEY BLOCK-----":"lQOYBGVhunter2"}"#,
        r#"{"m":"\u0041","-----BEGIN PGP PRIVATE KEY BLOCK-----":"lQOYBGVhunter2"}"#,
        r#"{"cvv":{"-----BEGIN PRIVATE KEY-----":"1"},"b":"MIIEvQIBADANBgkq"}"#,
    ] {
        for format in [Format::Json, Format::Ndjson] {
            let (out, _) = redact(format, doc, &Options::default());
            assert!(!out.contains("MIIE") && !out.contains("lQOY"), "{out}");
        }
    }
    // A key whose markers are all read is no loss: the rest is kept.
    let (out, _) = redact(
        Format::Json,
        r#"{"cvv":{"-----BEGIN PRIVATE KEY-----":"1"},"n":"-----END PRIVATE KEY-----","ok":"fine"}"#,
        &Options::default(),
    );
    assert!(out.contains(r#""ok":"fine""#), "{out}");
}

#[test]
fn a_key_begun_or_ended_in_a_dropped_line_is_followed() {
    let long = "x".repeat(300);
    // Begun at the end of a line too long to read: its body is masked.
    let begun = format!(
        "{long} -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\n-----END PRIVATE KEY-----\nok 4111111111111111\n"
    );
    // Ended in one: the lines after it are read again.
    let ended = format!(
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\n{long} -----END PRIVATE KEY-----\nok 4111111111111111\n"
    );
    // Begun with a type name longer than a piece reader's overlap.
    let name = "A".repeat(300);
    let named = format!(
        "{long} -----BEGIN {name} PRIVATE KEY-----\nMIIEvQIBADANBgkq\n-----END PRIVATE KEY-----\nok 4111111111111111\n"
    );
    for format in [Format::Text, Format::Ndjson] {
        for cut in [1, 7, 64, 333, 1000] {
            for input in [&begun, &ended, &named] {
                let out = streamed(format, input, 100, cut);
                assert!(!out.contains("MIIE"), "cut {cut}: {out}");
                assert!(out.contains("[REDACTED:line-too-long]"), "cut {cut}: {out}");
                assert!(out.ends_with("ok ************1111\n"), "cut {cut}: {out}");
            }
        }
    }
    // In NDJSON, a begin marker written with escapes in a dropped line.
    let escaped = format!(
        "{{\"m\":\"{long} -----BEGIN PRIVATE KEY\\u002d----\"}}\nMIIEvQIBADANBgkq\n-----END PRIVATE KEY-----\nok\n"
    );
    for cut in [7, 1000] {
        let out = streamed(Format::Ndjson, &escaped, 100, cut);
        assert!(
            !out.contains("MIIE") && out.ends_with("\nok\n"),
            "cut {cut}: {out}"
        );
    }
}
