use std::collections::BTreeMap;

use super::*;

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The signers in `which` sign `message` with fresh nonces; returns the
/// aggregate (or FROST's refusal).
fn sign(
    shares: &[ClusterShare],
    which: &[usize],
    message: &[u8],
) -> Result<frost::Signature, frost::Error> {
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for &i in which {
        let kp = &shares[i].key_package;
        let (n, c) = frost::round1::commit(kp.signing_share(), &mut rand_core06::OsRng);
        nonces.insert(*kp.identifier(), n);
        commitments.insert(*kp.identifier(), c);
    }
    let package = frost::SigningPackage::new(commitments, message);
    let mut signature_shares = BTreeMap::new();
    for &i in which {
        let kp = &shares[i].key_package;
        let share = frost::round2::sign(&package, &nonces[kp.identifier()], kp)?;
        signature_shares.insert(*kp.identifier(), share);
    }
    frost::aggregate(&package, &signature_shares, &shares[0].public)
}

#[test]
fn any_threshold_of_shares_signs_a_checkpoint_that_plain_ed25519_verifies() {
    let shares = deal(4, 3).unwrap();
    assert_eq!(shares.len(), 4);
    let vkey = verifier_key("example.org/log", &shares[0].public).unwrap();
    let text = "example.org/log\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
    for which in [[0, 1, 2], [1, 2, 3], [0, 2, 3], [3, 1, 0]] {
        let signature = sign(&shares, &which, text.as_bytes()).unwrap();
        let bytes = signature.serialize().unwrap();
        assert_eq!(bytes.len(), 64);
        // The spec crate's note verification: strict RFC 8032 (ed25519-dalek
        // verify_strict) under the vkey, as any C2SP client would.
        assert_eq!(vkey.verify(text, &bytes), Ok(None), "{which:?}");
        assert!(vkey.verify("another text\n", &bytes).is_err());
    }
    // Every share names the same key; a second deal makes another.
    assert!(shares.iter().all(|s| s.public == shares[0].public));
    let other = deal(4, 3).unwrap();
    assert_ne!(
        verifier_key("example.org/log", &other[0].public).unwrap(),
        vkey
    );
}

#[test]
fn fewer_shares_than_the_threshold_do_not_sign() {
    let shares = deal(4, 3).unwrap();
    assert!(sign(&shares, &[0, 1], b"text\n").is_err());
}

#[test]
fn a_bad_signature_share_is_named() {
    let shares = deal(4, 3).unwrap();
    let message = b"example.org/log\n1\n";
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for share in &shares[..3] {
        let kp = &share.key_package;
        let (n, c) = frost::round1::commit(kp.signing_share(), &mut rand_core06::OsRng);
        nonces.insert(*kp.identifier(), n);
        commitments.insert(*kp.identifier(), c);
    }
    let package = frost::SigningPackage::new(commitments.clone(), message);
    let other = frost::SigningPackage::new(commitments, b"another message\n");
    let mut signature_shares = BTreeMap::new();
    for (i, share) in shares[..3].iter().enumerate() {
        let kp = &share.key_package;
        // Replica 1 signs something else.
        let signed = if i == 1 { &other } else { &package };
        let s = frost::round2::sign(signed, &nonces[kp.identifier()], kp).unwrap();
        signature_shares.insert(*kp.identifier(), s);
    }
    let refused = frost::aggregate(&package, &signature_shares, &shares[0].public).unwrap_err();
    assert_eq!(
        refused.culprits(),
        vec![*shares[1].key_package.identifier()]
    );
}

#[test]
fn share_files_are_owner_only_and_read_strictly() {
    let dir = crate::test_dir::TestDir::new(&format!("cluster-share-{}", std::process::id()));
    let shares = deal(4, 3).unwrap();
    let path = dir.join("replica-1.cluster-share");
    write_share(&path, "example.org/log", &shares[1]).unwrap();
    assert_eq!(load_share(&path, "example.org/log").unwrap(), shares[1]);
    assert!(
        write_share(&path, "example.org/log", &shares[1]).is_err(),
        "never replaced"
    );
    let err = load_share(&path, "other.org/log").unwrap_err();
    assert!(
        err.to_string().contains("not of \"other.org/log\""),
        "{err}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_share(&path, "example.org/log").unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let rewrite = |name: &str, body: String| {
        let p = dir.join(name);
        crate::config::write_secret(&p, &body).unwrap();
        load_share(&p, "example.org/log").unwrap_err().to_string()
    };
    assert!(rewrite("extra", format!("{text}more\n")).contains("5 lines"));
    assert!(rewrite("no-newline", text.trim_end().to_owned()).contains("newline"));
    assert!(
        rewrite("label", text.replacen(SHARE_FILE_LABEL, "bftlog other", 1))
            .contains("not a cluster key share")
    );
    assert!(rewrite("base64", text.replacen(lines[2], "!!!", 1)).contains("not base64"));
    // Replica 2's public package with replica 1's key package: the public
    // packages of one deal are equal, so take another deal's.
    let other = deal(4, 3).unwrap();
    let mixed = format!(
        "{SHARE_FILE_LABEL}\nexample.org/log\n{}\n{}\n",
        lines[2],
        B64.encode(other[1].public.serialize().unwrap())
    );
    assert!(rewrite("mixed", mixed).contains("does not belong"));
}

/// RFC 9591, Appendix E.1: FROST(Ed25519, SHA-512), participants 1 and 3
/// of 3 with threshold 2. The crate signs with the RFC's nonces and shares
/// to the RFC's signature shares and signature, which ed25519-dalek's
/// strict verification accepts.
#[test]
fn rfc_9591_ed25519_vector() {
    type Nonce = frost_core::round1::Nonce<frost::Ed25519Sha512>;
    let vk = frost::VerifyingKey::deserialize(&hex(
        "15d21ccd7ee42959562fc8aa63224c8851fb3ec85a3faf66040d380fb9738673",
    ))
    .unwrap();
    let message = hex("74657374");
    let shares = [
        (
            1u16,
            "929dcc590407aae7d388761cddb0c0db6f5627aea8e217f4a033f2ec83d93509",
        ),
        (
            2,
            "a91e66e012e4364ac9aaa405fcafd370402d9859f7b6685c07eed76bf409e80d",
        ),
        (
            3,
            "d3cb090a075eb154e82fdb4b3cb507f110040905468bb9c46da8bdea643a9a02",
        ),
    ];
    let mut key_packages = BTreeMap::new();
    let mut verifying_shares = BTreeMap::new();
    for (id, share) in shares {
        let id = frost::Identifier::try_from(id).unwrap();
        let signing = frost::keys::SigningShare::deserialize(&hex(share)).unwrap();
        let verifying = frost::keys::VerifyingShare::from(signing);
        verifying_shares.insert(id, verifying);
        key_packages.insert(
            id,
            frost::keys::KeyPackage::new(id, signing, verifying, vk, 2),
        );
    }
    let round_one = [
        (
            1u16,
            "ef6599dea4010581a72b3018c37c29a4341d7cab0773e8687ca74dcf14009701",
            "2baadfa0c69aa60d517ad4751de372a73f9d89cfc39026601f18458cdec12605",
            "9b116f12589591a7e23fe8048059ab10ab48e67739e7a2fb3890f61a7999478c",
        ),
        (
            3,
            "80f8d9a4b8f9366e1a0b618107c907cd3ee29fa9bb40b4691cc1bde696240005",
            "2610b664a5a187b4855e87d2ff485bebdf043dc2f161fcd4854cd01dc0276404",
            "e679a2a971748ccfaabead4dbe8ac1def61275c186c79d471e1e45091ad1e687",
        ),
    ];
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for (id, hiding, binding, hiding_commitment) in round_one {
        let id = frost::Identifier::try_from(id).unwrap();
        let n = frost::round1::SigningNonces::from_nonces(
            Nonce::deserialize(&hex(hiding)).unwrap(),
            Nonce::deserialize(&hex(binding)).unwrap(),
        );
        assert_eq!(
            n.commitments().hiding().serialize().unwrap(),
            hex(hiding_commitment)
        );
        commitments.insert(id, *n.commitments());
        nonces.insert(id, n);
    }
    let package = frost::SigningPackage::new(commitments, &message);
    let expected_shares = [
        (
            1u16,
            "60997f0142e43e8005027fe5ab7447dac00d22c2d7ddd9571a02613ba7d81c08",
        ),
        (
            3,
            "79390e78bc59699c7af831f8f5fb478ec871a85f561a8641b5670ac4443f720f",
        ),
    ];
    let mut signature_shares = BTreeMap::new();
    for (id, expected) in expected_shares {
        let id = frost::Identifier::try_from(id).unwrap();
        let share = frost::round2::sign(&package, &nonces[&id], &key_packages[&id]).unwrap();
        assert_eq!(share.serialize(), hex(expected));
        signature_shares.insert(id, share);
    }
    let public = frost::keys::PublicKeyPackage::new(verifying_shares, vk, Some(2));
    let signature = frost::aggregate(&package, &signature_shares, &public).unwrap();
    let bytes = signature.serialize().unwrap();
    assert_eq!(
        bytes,
        hex(
            "154fb694ee7fcb37bf2381d94488c2a84b03b3352ad085feca81ad26d45852b7ecfe971ce4da95c4a95db93ac376b053897fca212ef85f99cf696bffeb178f07"
        )
    );
    let dalek =
        ed25519_dalek::VerifyingKey::from_bytes(&vk.serialize().unwrap().try_into().unwrap())
            .unwrap();
    dalek
        .verify_strict(
            &message,
            &ed25519_dalek::Signature::from_slice(&bytes).unwrap(),
        )
        .unwrap();
}
