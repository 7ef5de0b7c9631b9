//! The wire format: round trips of every message through both codecs, hostile input,
//! version and header checks, and golden bytes that pin the format.
#![cfg(feature = "std")]

mod common;

use std::fmt::Debug;

use common::*;
use proptest::prelude::*;
use reflex_msgs::*;

/// Encodes with both codecs, checks they agree, and decodes with both.
fn round_trip<T: WireMessage + PartialEq + Debug>(msg: &T) -> Vec<u8> {
    let bytes = encode(msg).expect("encode");
    assert_eq!(bytes[..4], ENCAPSULATION_CDR_LE);

    let mut buf = vec![0u8; bytes.len()];
    let n = encode_to_slice(msg, &mut buf).expect("encode_to_slice");
    assert_eq!(
        buf[..n],
        bytes[..],
        "slice encoder disagrees with cdr-encoding"
    );

    assert_eq!(&decode::<T>(&bytes).expect("decode"), msg);
    assert_eq!(
        &decode_from_slice::<T>(&bytes).expect("decode_from_slice"),
        msg
    );
    bytes
}

/// Every strict prefix of a valid encoding fails to decode (and nothing panics).
fn every_prefix_fails<T: WireMessage + Debug>(bytes: &[u8]) {
    for len in 0..bytes.len() {
        let prefix = &bytes[..len];
        assert!(decode::<T>(prefix).is_err(), "prefix {len} decoded");
        assert!(
            decode_from_slice::<T>(prefix).is_err(),
            "prefix {len} decoded"
        );
    }
}

/// Arbitrary input never panics; when both decoders accept it they agree (compared
/// as re-encoded bytes: corrupted floats may be NaN).
fn garbage_is_harmless<T: WireMessage + Debug>(bytes: &[u8]) {
    let a = decode::<T>(bytes);
    let b = decode_from_slice::<T>(bytes);
    if let (Ok(a), Ok(b)) = (&a, &b) {
        assert_eq!(encode(a).unwrap(), encode(b).unwrap());
    }
}

/// Decodes `bytes` with both decoders as every message type; none may panic.
fn garbage_as_every_type(bytes: &[u8]) {
    garbage_is_harmless::<Observation>(bytes);
    garbage_is_harmless::<ActionCommand>(bytes);
    garbage_is_harmless::<Transition>(bytes);
    garbage_is_harmless::<TransitionBatch>(bytes);
    garbage_is_harmless::<PolicySpec>(bytes);
    garbage_is_harmless::<PolicyUpdate>(bytes);
    garbage_is_harmless::<Status>(bytes);
    garbage_is_harmless::<StepInfo>(bytes);
    garbage_is_harmless::<ObservationN<8>>(bytes);
    garbage_is_harmless::<ActionCommandN<4>>(bytes);
    garbage_is_harmless::<TransitionN<8, 4, 4>>(bytes);
}

macro_rules! round_trip_props {
    ($($name:ident: $strategy:expr;)*) => {
        proptest! {
            $(
                #[test]
                fn $name(msg in $strategy) {
                    let bytes = round_trip(&msg);
                    prop_assert!(bytes.len() <= MAX_MESSAGE_BYTES);
                }
            )*
        }
    };
}

round_trip_props! {
    observation_round_trips: observation();
    action_command_round_trips: action_command();
    transition_round_trips: transition();
    transition_batch_round_trips: transition_batch();
    policy_spec_round_trips: policy_spec();
    policy_update_round_trips: policy_update();
    status_round_trips: status();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn truncated_observations_fail(msg in observation()) {
        every_prefix_fails::<Observation>(&encode(&msg).unwrap());
    }

    #[test]
    fn truncated_action_commands_fail(msg in action_command()) {
        every_prefix_fails::<ActionCommand>(&encode(&msg).unwrap());
    }

    #[test]
    fn truncated_transition_batches_fail(msg in transition_batch()) {
        every_prefix_fails::<TransitionBatch>(&encode(&msg).unwrap());
    }

    #[test]
    fn truncated_policy_updates_fail(msg in policy_update()) {
        every_prefix_fails::<PolicyUpdate>(&encode(&msg).unwrap());
    }

    #[test]
    fn truncated_statuses_fail(msg in status()) {
        every_prefix_fails::<Status>(&encode(&msg).unwrap());
    }

    #[test]
    fn truncated_transitions_and_specs_fail(t in transition(), s in policy_spec()) {
        every_prefix_fails::<Transition>(&encode(&t).unwrap());
        every_prefix_fails::<PolicySpec>(&encode(&s).unwrap());
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        garbage_as_every_type(&bytes);
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(
        big_endian in any::<bool>(),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = if big_endian { ENCAPSULATION_CDR_BE } else { ENCAPSULATION_CDR_LE }.to_vec();
        // A supported version, so the body is really parsed.
        bytes.extend_from_slice(&if big_endian { 1u16.to_be_bytes() } else { 1u16.to_le_bytes() });
        bytes.extend_from_slice(&body);
        garbage_as_every_type(&bytes);
    }

    #[test]
    fn corrupted_messages_never_panic(
        batch in transition_batch(),
        update in policy_update(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        for mut bytes in [encode(&batch).unwrap(), encode(&update).unwrap()] {
            for (index, value) in &flips {
                // Keep the header so the body gets parsed.
                let i = 4 + index.index(bytes.len() - 4);
                bytes[i] = *value;
            }
            garbage_as_every_type(&bytes);
        }
    }

    /// NaN payloads and every other bit pattern survive: decoding and re-encoding
    /// reproduces the bytes exactly.
    #[test]
    fn float_bits_survive(
        values in prop::collection::vec(float_bits(), 0..16),
        reward in float_bits(),
        action in prop::collection::vec(float_bits(), 0..4),
    ) {
        let obs = Observation { values, reward, ..samples::observation() };
        let bytes = encode(&obs).unwrap();
        let back: Observation = decode(&bytes).unwrap();
        prop_assert_eq!(encode(&back).unwrap(), bytes.clone());
        let back: Observation = decode_from_slice(&bytes).unwrap();
        prop_assert_eq!(encode(&back).unwrap(), bytes);

        let cmd = ActionCommand { action: Action::Continuous(action), ..samples::action_command() };
        let bytes = encode(&cmd).unwrap();
        let back: ActionCommand = decode(&bytes).unwrap();
        prop_assert_eq!(encode(&back).unwrap(), bytes);
    }

    /// The fixed-capacity types write the very bytes of their growable counterparts,
    /// and read them back.
    #[test]
    fn fixed_capacity_types_are_byte_identical(
        obs in observation(),
        cmd in action_command(),
        t in transition(),
    ) {
        let obs = Observation { robot_id: "r".repeat(obs.robot_id.len().min(ROBOT_ID_CAPACITY)), ..obs };
        let fixed = ObservationN::<16>::try_from(&obs).unwrap();
        let bytes = encode(&obs).unwrap();
        prop_assert_eq!(&round_trip(&fixed), &bytes);
        prop_assert_eq!(decode::<ObservationN<16>>(&bytes).unwrap(), fixed.clone());
        prop_assert_eq!(Observation::from(&fixed), obs);

        let cmd = ActionCommand { robot_id: "robot".into(), ..cmd };
        let fixed = ActionCommandN::<6>::try_from(&cmd).unwrap();
        let bytes = encode(&cmd).unwrap();
        prop_assert_eq!(&round_trip(&fixed), &bytes);
        prop_assert_eq!(decode_from_slice::<ActionCommandN<6>>(&bytes).unwrap(), fixed.clone());
        prop_assert_eq!(ActionCommand::from(&fixed), cmd);

        let t = Transition { robot_id: "robot".into(), ..t };
        let fixed = TransitionN::<8, 4, 3>::try_from(&t).unwrap();
        let bytes = encode(&t).unwrap();
        prop_assert_eq!(&round_trip(&fixed), &bytes);
        prop_assert_eq!(Transition::from(&fixed), t);
    }

    /// A `PolicySpec` survives JSON (its form in ONNX metadata), infinite bounds
    /// included.
    #[test]
    fn policy_spec_json_round_trips(spec in valid_policy_spec()) {
        prop_assert_eq!(spec.validate(), Ok(()));
        let json = serde_json::to_string(&spec).unwrap();
        let back: PolicySpec = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, spec);
    }
}

#[test]
fn hand_made_samples_round_trip() {
    round_trip(&samples::observation());
    round_trip(&samples::action_command());
    round_trip(&samples::transition());
    round_trip(&samples::transition_batch());
    round_trip(&samples::policy_spec());
    round_trip(&samples::policy_update());
    round_trip(&samples::status());
    round_trip(&samples::step_info());
}

/// The exact bytes of a small `Observation`, worked out by hand from the CDR rules:
/// this pins the wire format (field order, alignment, lengths, endianness).
#[test]
fn golden_observation_bytes() {
    let obs = Observation {
        wire_version: 1,
        robot_id: "r1".into(),
        seq: 7,
        timestamp_ns: 0x0102_0304_0506_0708,
        episode_id: 2,
        step: 3,
        values: vec![1.0, -2.0],
        reward: 0.5,
        terminated: true,
        truncated: false,
    };
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0x00, 0x01, 0x00, 0x00,                          // header: CDR little-endian
        0x01, 0x00,                                      // body 0: wire_version = 1
        0x00, 0x00,                                      // 2: pad to 4
        0x03, 0x00, 0x00, 0x00,                          // 4: robot_id length 3 (with NUL)
        b'r', b'1', 0x00,                                // 8: "r1\0"
        0x00, 0x00, 0x00, 0x00, 0x00,                    // 11: pad to 8
        0x07, 0, 0, 0, 0, 0, 0, 0,                       // 16: seq = 7
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // 24: timestamp_ns
        0x02, 0, 0, 0, 0, 0, 0, 0,                       // 32: episode_id = 2
        0x03, 0x00, 0x00, 0x00,                          // 40: step = 3
        0x02, 0x00, 0x00, 0x00,                          // 44: values length 2
        0x00, 0x00, 0x80, 0x3f,                          // 48: 1.0f32
        0x00, 0x00, 0x00, 0xc0,                          // 52: -2.0f32
        0x00, 0x00, 0x00, 0x3f,                          // 56: reward = 0.5f32
        0x01,                                            // 60: terminated
        0x00,                                            // 61: truncated
    ];
    assert_eq!(encode(&obs).unwrap(), expected);
    assert_eq!(decode::<Observation>(expected).unwrap(), obs);
    assert_eq!(decode_from_slice::<Observation>(expected).unwrap(), obs);
}

/// The exact bytes of an `ActionCommand` with a continuous action: the flat
/// `Action.msg` form (`kind`, `index`, `values`) nested in place.
#[test]
fn golden_action_command_bytes() {
    let cmd = ActionCommand {
        wire_version: 1,
        robot_id: String::new(),
        seq: 1,
        timestamp_ns: 2,
        policy_version: 3,
        action: Action::Continuous(vec![0.25]),
    };
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0x00, 0x01, 0x00, 0x00,                          // header
        0x01, 0x00,                                      // 0: wire_version
        0x00, 0x00,                                      // 2: pad
        0x01, 0x00, 0x00, 0x00,                          // 4: robot_id length 1
        0x00,                                            // 8: "" + NUL
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,        // 9: pad to 16
        0x01, 0, 0, 0, 0, 0, 0, 0,                       // 16: seq
        0x02, 0, 0, 0, 0, 0, 0, 0,                       // 24: timestamp_ns
        0x03, 0, 0, 0, 0, 0, 0, 0,                       // 32: policy_version
        0x01,                                            // 40: action.kind = KIND_CONTINUOUS
        0x00, 0x00, 0x00,                                // 41: pad
        0x00, 0x00, 0x00, 0x00,                          // 44: action.index = 0
        0x01, 0x00, 0x00, 0x00,                          // 48: action.values length 1
        0x00, 0x00, 0x80, 0x3e,                          // 52: 0.25f32
    ];
    assert_eq!(encode(&cmd).unwrap(), expected);
    assert_eq!(decode::<ActionCommand>(expected).unwrap(), cmd);

    let discrete = ActionCommand {
        action: Action::Discrete(5),
        ..cmd
    };
    let bytes = encode(&discrete).unwrap();
    assert_eq!(
        bytes[44..],
        [0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0],
        "kind 0, pad, index 5, no values"
    );
}

/// Big-endian CDR (`00 00` header) from another DDS vendor decodes too.
#[test]
fn big_endian_input_decodes() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x00, 0x00, 0x00, 0x00,                          // header: CDR big-endian
        0x00, 0x01,                                      // wire_version = 1
        0x00, 0x00,
        0x00, 0x00, 0x00, 0x02, b'x', 0x00,              // robot_id "x"
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00,              // pad to 16
        0, 0, 0, 0, 0, 0, 0, 9,                          // seq = 9
        0, 0, 0, 0, 0, 0, 0, 8,                          // timestamp_ns = 8
        0, 0, 0, 0, 0, 0, 0, 7,                          // policy_version = 7
        0x00,                                            // kind = discrete
        0x00, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x02,                          // index = 258
        0x00, 0x00, 0x00, 0x00,                          // no values
    ];
    let expected = ActionCommand {
        wire_version: 1,
        robot_id: "x".into(),
        seq: 9,
        timestamp_ns: 8,
        policy_version: 7,
        action: Action::Discrete(258),
    };
    assert_eq!(decode::<ActionCommand>(bytes).unwrap(), expected);
    assert_eq!(decode_from_slice::<ActionCommand>(bytes).unwrap(), expected);
    assert_eq!(peek_version(bytes), Ok(1));
}

#[test]
fn newer_versions_are_refused_before_the_body() {
    let newer = WIRE_VERSION + 1;
    let mut bytes = encode(&samples::observation()).unwrap();
    bytes[4..6].copy_from_slice(&newer.to_le_bytes());
    let expected = WireError::UnsupportedVersion {
        found: newer,
        supported: WIRE_VERSION,
    };
    assert_eq!(decode::<Observation>(&bytes), Err(expected.clone()));
    assert_eq!(
        decode_from_slice::<Observation>(&bytes),
        Err(expected.clone())
    );
    assert_eq!(peek_version(&bytes), Ok(newer));

    // Only the header and the version exist: the body is never looked at.
    let mut stub = ENCAPSULATION_CDR_LE.to_vec();
    stub.extend_from_slice(&newer.to_le_bytes());
    assert_eq!(decode::<PolicyUpdate>(&stub), Err(expected.clone()));

    // Version 0 was never valid.
    bytes[4..6].copy_from_slice(&0u16.to_le_bytes());
    assert_eq!(
        decode::<Observation>(&bytes),
        Err(WireError::UnsupportedVersion {
            found: 0,
            supported: WIRE_VERSION
        })
    );

    // Nor is a message claiming a newer version written.
    let obs = Observation {
        wire_version: newer,
        ..samples::observation()
    };
    assert_eq!(encode(&obs), Err(expected.clone()));
    assert_eq!(encode_to_slice(&obs, &mut [0u8; 256]), Err(expected));
    assert!(
        expected_display_names_both(newer),
        "the error message says what was found and what is supported"
    );
}

fn expected_display_names_both(newer: u16) -> bool {
    let text = WireError::UnsupportedVersion {
        found: newer,
        supported: WIRE_VERSION,
    }
    .to_string();
    text.contains(&newer.to_string()) && text.contains(&WIRE_VERSION.to_string())
}

#[test]
fn wrong_headers_are_refused() {
    let good = encode(&samples::status()).unwrap();
    for (header, id) in [
        ([0x00, 0x02], 0x0002), // PL_CDR_BE
        ([0x00, 0x03], 0x0003), // PL_CDR_LE
        ([0x00, 0x07], 0x0007), // XCDR2 little-endian (PLAIN_CDR2_LE)
        ([0x01, 0x00], 0x0100), // a byte-swapped header
        ([0xff, 0xff], 0xffff),
    ] {
        let mut bytes = good.clone();
        bytes[..2].copy_from_slice(&header);
        let expected = Err(WireError::UnsupportedRepresentation { id });
        assert_eq!(decode::<Status>(&bytes), expected);
        assert_eq!(decode_from_slice::<Status>(&bytes), expected);
    }
    for len in 0..6 {
        let expected = Err(WireError::TooShort { len });
        assert_eq!(decode::<Status>(&good[..len]), expected, "len {len}");
    }
    // A little-endian body behind a big-endian header reads a byte-swapped version.
    let mut swapped = good;
    swapped[1] = 0x00;
    assert_eq!(
        decode::<Status>(&swapped),
        Err(WireError::UnsupportedVersion {
            found: 0x0100,
            supported: WIRE_VERSION
        })
    );
}

#[test]
fn huge_length_prefixes_are_refused_without_allocating() {
    // Observation.values length prefix (golden layout: body offset 44 -> byte 48).
    let obs = Observation {
        robot_id: "r1".into(),
        values: vec![1.0, 2.0],
        ..Observation::default()
    };
    let mut bytes = encode(&obs).unwrap();
    assert_eq!(bytes[48..52], 2u32.to_le_bytes());
    bytes[48..52].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode::<Observation>(&bytes), Err(WireError::Truncated));
    assert_eq!(
        decode_from_slice::<Observation>(&bytes),
        Err(WireError::Truncated)
    );

    // The robot_id string length.
    let mut bytes = encode(&obs).unwrap();
    bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode::<Observation>(&bytes), Err(WireError::Truncated));
    assert_eq!(
        decode_from_slice::<Observation>(&bytes),
        Err(WireError::Truncated)
    );

    // A batch claiming 4 billion transitions, and a policy claiming 4 GiB of ONNX.
    let batch = TransitionBatch {
        robot_id: "r1".into(),
        ..TransitionBatch::default()
    };
    let mut bytes = encode(&batch).unwrap();
    let n = bytes.len();
    assert_eq!(bytes[n - 4..], 0u32.to_le_bytes());
    bytes[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode::<TransitionBatch>(&bytes), Err(WireError::Truncated));
    assert_eq!(
        decode_from_slice::<TransitionBatch>(&bytes),
        Err(WireError::Truncated)
    );

    let update = samples::policy_update();
    let bytes = encode(&update).unwrap();
    let onnx_len = (update.onnx.len() as u32).to_le_bytes();
    let at = bytes
        .windows(4 + update.onnx.len())
        .position(|w| w[..4] == onnx_len && w[4..] == update.onnx[..])
        .expect("onnx bytes in the encoding");
    let mut forged = bytes.clone();
    forged[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode::<PolicyUpdate>(&forged), Err(WireError::Truncated));
    assert_eq!(
        decode_from_slice::<PolicyUpdate>(&forged),
        Err(WireError::Truncated)
    );

    // The fixed-capacity types refuse sequences over capacity.
    let long = Observation {
        values: vec![0.0; 9],
        ..obs
    };
    let bytes = encode(&long).unwrap();
    assert!(matches!(
        decode::<ObservationN<8>>(&bytes),
        Err(WireError::Malformed(_))
    ));
    assert!(matches!(
        decode_from_slice::<ObservationN<8>>(&bytes),
        Err(WireError::Malformed(_))
    ));
}

#[test]
fn oversized_input_is_refused_up_front() {
    let mut bytes = vec![0u8; MAX_MESSAGE_BYTES + 1];
    bytes[..4].copy_from_slice(&ENCAPSULATION_CDR_LE);
    let expected = Err(WireError::TooLarge {
        len: MAX_MESSAGE_BYTES + 1,
        max: MAX_MESSAGE_BYTES,
    });
    assert_eq!(decode::<PolicyUpdate>(&bytes), expected);
    assert_eq!(decode_from_slice::<PolicyUpdate>(&bytes), expected);

    let update = PolicyUpdate::new(samples::policy_spec(), vec![0u8; MAX_MESSAGE_BYTES]);
    assert!(matches!(encode(&update), Err(WireError::TooLarge { .. })));
}

#[test]
fn trailing_bytes_beyond_padding_are_refused() {
    let bytes = encode(&samples::observation()).unwrap();
    for pad in 1..=3 {
        let mut padded = bytes.clone();
        padded.extend(std::iter::repeat_n(0u8, pad));
        assert_eq!(
            decode::<Observation>(&padded).unwrap(),
            samples::observation()
        );
        assert_eq!(
            decode_from_slice::<Observation>(&padded).unwrap(),
            samples::observation()
        );
    }
    let mut four = bytes.clone();
    four.extend([0u8; 4]);
    assert_eq!(
        decode::<Observation>(&four),
        Err(WireError::TrailingBytes { count: 4 })
    );
    let mut junk = bytes;
    junk.push(0x2a);
    assert_eq!(
        decode::<Observation>(&junk),
        Err(WireError::TrailingBytes { count: 1 })
    );
    assert_eq!(
        decode_from_slice::<Observation>(&junk),
        Err(WireError::TrailingBytes { count: 1 })
    );
}

#[test]
fn invalid_field_values_are_refused() {
    // Golden layout of ActionCommand: action.kind at byte 4 + 40.
    let cmd = ActionCommand {
        action: Action::Discrete(1),
        ..ActionCommand::default()
    };
    let bytes = encode(&cmd).unwrap();
    assert_eq!(bytes[44], KIND_DISCRETE);

    let mut bad_kind = bytes.clone();
    bad_kind[44] = 7;
    for result in [
        decode::<ActionCommand>(&bad_kind),
        decode_from_slice::<ActionCommand>(&bad_kind),
    ] {
        let Err(WireError::Malformed(reason)) = result else {
            panic!("unknown kind accepted: {result:?}");
        };
        assert!(reason.contains("unknown action kind 7"), "{reason}");
    }
    // A continuous action must not carry an index.
    let mut bad = encode(&ActionCommand {
        action: Action::Continuous(vec![]),
        ..ActionCommand::default()
    })
    .unwrap();
    bad[48] = 1;
    assert!(matches!(
        decode::<ActionCommand>(&bad),
        Err(WireError::Malformed(_))
    ));

    let obs = encode(&samples::observation()).unwrap();
    let mut bad_bool = obs.clone();
    let last = bad_bool.len() - 1;
    bad_bool[last] = 2;
    assert_eq!(
        decode::<Observation>(&bad_bool),
        Err(WireError::InvalidBool(2))
    );
    assert_eq!(
        decode_from_slice::<Observation>(&bad_bool),
        Err(WireError::InvalidBool(2))
    );

    let mut bad_utf8 = obs;
    bad_utf8[12] = 0xff; // first byte of robot_id
    assert_eq!(
        decode::<Observation>(&bad_utf8),
        Err(WireError::InvalidUtf8)
    );
    assert_eq!(
        decode_from_slice::<Observation>(&bad_utf8),
        Err(WireError::InvalidUtf8)
    );

    // A signature of a length other than 0 or 64.
    let mut update = samples::policy_update();
    update.signature = vec![1; 10];
    let bytes = encode(&update).unwrap();
    assert!(matches!(
        decode::<PolicyUpdate>(&bytes),
        Err(WireError::Malformed(_))
    ));
}

#[test]
fn encode_into_reuses_the_buffer() {
    let mut buf = Vec::with_capacity(1024);
    buf.extend_from_slice(b"stale");
    let ptr = buf.as_ptr();
    encode_into(&samples::observation(), &mut buf).unwrap();
    assert_eq!(buf, encode(&samples::observation()).unwrap());
    assert_eq!(buf.as_ptr(), ptr, "no reallocation");
    encode_into(&samples::status(), &mut buf).unwrap();
    assert_eq!(buf, encode(&samples::status()).unwrap());

    let bad = Status {
        wire_version: 0,
        ..samples::status()
    };
    assert!(encode_into(&bad, &mut buf).is_err());
    assert!(buf.is_empty(), "left empty on error");
}

#[test]
fn encode_to_slice_reports_a_small_buffer() {
    let obs = samples::observation();
    let len = encode(&obs).unwrap().len();
    let mut buf = vec![0u8; len];
    assert_eq!(encode_to_slice(&obs, &mut buf), Ok(len));
    let mut small = vec![0u8; len - 1];
    assert_eq!(
        encode_to_slice(&obs, &mut small),
        Err(WireError::BufferTooSmall { capacity: len - 1 })
    );
}

#[test]
fn policy_spec_json_is_readable() {
    let spec = PolicySpec {
        observation_space: BoxSpace::new(vec![f32::NEG_INFINITY, -1.0], vec![f32::INFINITY, 1.0])
            .unwrap(),
        action_space: ActionSpace::Discrete { n: 2 },
        ..samples::policy_spec()
    };
    let json: serde_json::Value = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["wire_version"], 1);
    assert_eq!(json["algorithm"], "ddpg");
    assert_eq!(
        json["action_space"],
        serde_json::json!({"type": "discrete", "n": 2})
    );
    assert_eq!(
        json["observation_space"],
        serde_json::json!({"low": ["-inf", -1.0], "high": ["inf", 1.0]})
    );
    let back: PolicySpec = serde_json::from_value(json).unwrap();
    assert_eq!(back, spec);

    let boxed = serde_json::to_value(samples::policy_spec().action_space).unwrap();
    assert_eq!(
        boxed,
        serde_json::json!({"type": "box", "low": [-2.0], "high": [2.0]})
    );

    // Unknown keys are errors, not silently dropped.
    let mut json = serde_json::to_value(&spec).unwrap();
    json["surprise"] = serde_json::json!(1);
    assert!(serde_json::from_value::<PolicySpec>(json).is_err());

    assert_eq!(
        serde_json::to_value(Action::Continuous(vec![0.5])).unwrap(),
        serde_json::json!({"continuous": [0.5]})
    );
    assert_eq!(
        serde_json::from_str::<Action>(r#"{"discrete": 3}"#).unwrap(),
        Action::Discrete(3)
    );
}

#[test]
fn type_names_follow_ros_conventions() {
    assert_eq!(Observation::NAME, "Observation");
    assert_eq!(Observation::ROS_TYPE, "reflex_msgs/msg/Observation");
    assert_eq!(
        TransitionBatch::DDS_TYPE,
        "reflex_msgs::msg::dds_::TransitionBatch_"
    );
    assert_eq!(ObservationN::<4>::DDS_TYPE, Observation::DDS_TYPE);
    assert_eq!(TransitionN::<4, 1>::NAME, Transition::NAME);
    assert_eq!(ActionCommandN::<1>::NAME, ActionCommand::NAME);
}
