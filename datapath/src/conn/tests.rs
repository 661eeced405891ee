//! The receiver against a recording sink: any split of a stream gives the same PDUs and the
//! same placed bytes as the whole stream; faults found mid-stream are replayed.

use std::collections::HashMap;

use proptest::prelude::*;

use super::{PduReceiver, PduSink, ReceiveError};
use crate::pdu::{self, DataIn, Digests, Header, Limits, NopIn, PduError, Tag, RESERVED_TAG};

/// Tags whose Data-In the recorder places (below) or stages (at and above).
const PLACED_TAGS: Tag = 2;
const BUFFER_LEN: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Delivered {
    Staged(Vec<u8>),
    Placed(u32),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused")]
struct Refused;

struct Recorder {
    digests: Digests,
    buffers: HashMap<Tag, Vec<u8>>,
    delivered: Vec<(Header, Delivered)>,
}

impl Recorder {
    fn new(digests: Digests) -> Recorder {
        let buffers = (0..PLACED_TAGS).map(|t| (t, vec![0; BUFFER_LEN])).collect();
        Recorder {
            digests,
            buffers,
            delivered: Vec::new(),
        }
    }
}

impl PduSink for Recorder {
    type Error = Refused;

    fn digests(&self) -> Digests {
        self.digests
    }

    fn limits(&self) -> Limits {
        Limits {
            max_data_segment_length: 8192,
            ..Limits::default()
        }
    }

    fn destination(&mut self, header: &Header, data_len: u32) -> Option<&mut [u8]> {
        let Header::DataIn(h) = header else {
            return None;
        };
        let start = h.buffer_offset as usize;
        self.buffers
            .get_mut(&h.initiator_task_tag)?
            .get_mut(start..start + data_len as usize)
    }

    fn handle_placed(&mut self, header: Header, data_len: u32) -> Result<(), Refused> {
        self.delivered.push((header, Delivered::Placed(data_len)));
        Ok(())
    }

    fn handle_pdu(&mut self, header: Header, data: &[u8]) -> Result<(), Refused> {
        self.delivered
            .push((header, Delivered::Staged(data.to_vec())));
        Ok(())
    }
}

fn data_in(tag: Tag, offset: u32, data_sn: u32) -> Header {
    Header::DataIn(DataIn {
        final_pdu: false,
        acknowledge: false,
        overflow: false,
        underflow: false,
        status: None,
        lun: [0; 8],
        initiator_task_tag: tag,
        target_transfer_tag: RESERVED_TAG,
        stat_sn: 0,
        exp_cmd_sn: 1,
        max_cmd_sn: 32,
        data_sn,
        buffer_offset: offset,
        residual_count: 0,
    })
}

fn nop_in(stat_sn: u32) -> Header {
    Header::NopIn(NopIn {
        lun: [0; 8],
        initiator_task_tag: RESERVED_TAG,
        target_transfer_tag: 7,
        stat_sn,
        exp_cmd_sn: 1,
        max_cmd_sn: 32,
    })
}

/// One PDU of a generated stream.
#[derive(Debug, Clone)]
struct Spec {
    header: Header,
    data: Vec<u8>,
}

fn spec() -> impl Strategy<Value = Spec> {
    let data = || {
        prop_oneof![
            Just(Vec::new()),
            proptest::collection::vec(any::<u8>(), 1..3000)
        ]
    };
    prop_oneof![
        (0..4u32, 0..(BUFFER_LEN as u32 - 3000), any::<u32>(), data()).prop_map(
            |(tag, offset, sn, data)| Spec {
                header: data_in(tag, offset, sn),
                data,
            }
        ),
        (any::<u32>(), data()).prop_map(|(sn, data)| Spec {
            header: nop_in(sn),
            data,
        }),
    ]
}

fn encode(specs: &[Spec], digests: Digests) -> Vec<u8> {
    let mut wire = Vec::new();
    for s in specs {
        pdu::encode_pdu(&s.header, &s.data, digests, &mut wire).expect("encodes");
    }
    wire
}

/// What the stream should leave behind: every PDU in order, and the placed buffers.
/// The placed buffers, by tag.
type Buffers = HashMap<Tag, Vec<u8>>;

fn expected(specs: &[Spec]) -> (Vec<(Header, Delivered)>, Buffers) {
    let mut buffers: Buffers = (0..PLACED_TAGS).map(|t| (t, vec![0; BUFFER_LEN])).collect();
    let delivered = specs
        .iter()
        .map(|s| {
            let placed = match &s.header {
                Header::DataIn(h) if !s.data.is_empty() => buffers
                    .get_mut(&h.initiator_task_tag)
                    .map(|b| {
                        let at = h.buffer_offset as usize;
                        b[at..at + s.data.len()].copy_from_slice(&s.data);
                    })
                    .is_some(),
                _ => false,
            };
            let how = if placed {
                Delivered::Placed(s.data.len() as u32)
            } else {
                Delivered::Staged(s.data.clone())
            };
            (s.header.clone(), how)
        })
        .collect();
    (delivered, buffers)
}

/// Feeds `wire` cut at `cuts`; pieces marked `direct` go straight into the placement when
/// one is open, as a zero-copy receive would.
fn feed_split(
    recorder: &mut Recorder,
    wire: &[u8],
    cuts: &[(usize, bool)],
) -> Result<(), ReceiveError<Refused>> {
    let mut receiver = PduReceiver::new();
    let mut points: Vec<(usize, bool)> = cuts
        .iter()
        .map(|&(c, d)| (c % (wire.len() + 1), d))
        .collect();
    points.sort();
    let mut at = 0;
    for (end, direct) in points.into_iter().chain([(wire.len(), false)]) {
        let mut piece = &wire[at..end.max(at)];
        at = end.max(at);
        while !piece.is_empty() {
            let spare_len = match (direct, receiver.placement_spare(recorder)) {
                (true, Some(spare)) => {
                    let n = spare.len().min(piece.len());
                    spare[..n].copy_from_slice(&piece[..n]);
                    Some(n)
                }
                _ => None,
            };
            match spare_len {
                Some(n) => {
                    receiver.handle_placed_bytes(recorder, n)?;
                    piece = &piece[n..];
                }
                None => {
                    receiver.handle_bytes(recorder, piece)?;
                    piece = &[];
                }
            }
        }
    }
    assert!(receiver.is_idle(), "a whole stream leaves no partial PDU");
    Ok(())
}

proptest! {
    #[test]
    fn any_split_yields_the_same_pdus_and_placements(
        specs in proptest::collection::vec(spec(), 1..12),
        header_digest in any::<bool>(),
        data_digest in any::<bool>(),
        cuts in proptest::collection::vec((any::<usize>(), any::<bool>()), 0..40),
    ) {
        let digests = Digests { header: header_digest, data: data_digest };
        let wire = encode(&specs, digests);
        let (want, want_buffers) = expected(&specs);

        let mut whole = Recorder::new(digests);
        let mut receiver = PduReceiver::new();
        receiver.handle_bytes(&mut whole, &wire).expect("whole stream");
        prop_assert_eq!(&whole.delivered, &want);
        prop_assert_eq!(&whole.buffers, &want_buffers);

        let mut split = Recorder::new(digests);
        feed_split(&mut split, &wire, &cuts).expect("split stream");
        prop_assert_eq!(&split.delivered, &want);
        prop_assert_eq!(&split.buffers, &want_buffers);
    }
}

const BOTH: Digests = Digests {
    header: true,
    data: true,
};

#[test]
fn digest_fault_on_a_placed_payload_ends_the_stream() {
    let payload: Vec<u8> = (0..4097u32).map(|i| i as u8).collect();
    let mut wire = encode(
        &[Spec {
            header: data_in(0, 0, 0),
            data: payload.clone(),
        }],
        BOTH,
    );
    let last = wire.len() - 1;
    wire[last] ^= 0x5a;
    wire.extend(encode(
        &[Spec {
            header: nop_in(1),
            data: Vec::new(),
        }],
        BOTH,
    ));

    let mut recorder = Recorder::new(BOTH);
    let mut receiver = PduReceiver::new();
    let (head, rest) = wire.split_at(100);
    receiver
        .handle_bytes(&mut recorder, head)
        .expect("header and some payload");
    let error = receiver.handle_bytes(&mut recorder, rest).unwrap_err();
    assert!(
        matches!(
            error,
            ReceiveError::Pdu(PduError::DataDigestMismatch { .. })
        ),
        "{error:?}"
    );
    // The payload was placed before the digest could be checked; nothing was delivered,
    // not even the NOP-In behind it, and the stream stays refused.
    assert_eq!(recorder.buffers[&0][..payload.len()], payload[..]);
    assert!(recorder.delivered.is_empty());
    assert!(receiver.handle_bytes(&mut recorder, &[0]).is_err());
}

#[test]
fn trailer_split_across_receives_delivers_once_whole() {
    // 5 bytes of data: 3 of padding, 4 of digest after them.
    let wire = encode(
        &[Spec {
            header: data_in(1, 8, 0),
            data: b"hello".to_vec(),
        }],
        BOTH,
    );
    let mut recorder = Recorder::new(BOTH);
    let mut receiver = PduReceiver::new();
    let cut = wire.len() - 5; // data in, one pad byte in; two pad bytes and the digest to come
    receiver.handle_bytes(&mut recorder, &wire[..cut]).unwrap();
    assert!(recorder.delivered.is_empty());
    receiver
        .handle_bytes(&mut recorder, &wire[cut..cut + 3])
        .unwrap();
    assert!(recorder.delivered.is_empty(), "digest half in");
    receiver
        .handle_bytes(&mut recorder, &wire[cut + 3..])
        .unwrap();
    assert_eq!(
        recorder.delivered,
        vec![(data_in(1, 8, 0), Delivered::Placed(5))]
    );
    assert_eq!(&recorder.buffers[&1][8..13], b"hello");
    assert!(receiver.is_idle());
}

#[test]
fn header_digest_fault_and_oversized_segment_are_refused_from_the_header() {
    let mut wire = encode(
        &[Spec {
            header: nop_in(3),
            data: vec![1; 8],
        }],
        BOTH,
    );
    wire[pdu::BHS_LEN] ^= 1;
    let mut receiver = PduReceiver::new();
    let error = receiver
        .handle_bytes(&mut Recorder::new(BOTH), &wire[..pdu::BHS_LEN + 4])
        .unwrap_err();
    assert!(matches!(
        error,
        ReceiveError::Pdu(PduError::HeaderDigestMismatch { .. })
    ));

    let big = encode(
        &[Spec {
            header: nop_in(3),
            data: vec![1; 8193],
        }],
        Digests::default(),
    );
    let mut receiver = PduReceiver::new();
    let error = receiver
        .handle_bytes(&mut Recorder::new(Digests::default()), &big[..pdu::BHS_LEN])
        .unwrap_err();
    assert!(matches!(
        error,
        ReceiveError::Pdu(PduError::DataSegmentTooLong { len: 8193, .. })
    ));
}

#[test]
fn a_refused_pdu_stops_delivery() {
    struct Refuser;
    impl PduSink for Refuser {
        type Error = Refused;
        fn digests(&self) -> Digests {
            Digests::default()
        }
        fn limits(&self) -> Limits {
            Limits::default()
        }
        fn destination(&mut self, _: &Header, _: u32) -> Option<&mut [u8]> {
            None
        }
        fn handle_placed(&mut self, _: Header, _: u32) -> Result<(), Refused> {
            Err(Refused)
        }
        fn handle_pdu(&mut self, _: Header, _: &[u8]) -> Result<(), Refused> {
            Err(Refused)
        }
    }
    let wire = encode(
        &[Spec {
            header: nop_in(1),
            data: Vec::new(),
        }],
        Digests::default(),
    );
    let error = PduReceiver::new()
        .handle_bytes(&mut Refuser, &wire)
        .unwrap_err();
    assert_eq!(error, ReceiveError::Sink(Refused));
}
