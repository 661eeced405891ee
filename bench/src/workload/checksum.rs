//! fio's verify checksums (fio(1), `verify=`): each kind a fio job file may name computes
//! what fio's function of that name computes, except the two noted at the end. The parameters
//! are read from fio 3.42's source (file:line) and proved on blocks fio wrote
//! (`bench/tests/verify_kinds.rs`):
//!
//! - `md5` (crc/md5.c): MD5.
//! - `crc64` (crc/crc64.c:107-115, `fio_crc64`): poly 0xad93d23594c935a9, reflected (its
//!   table's entry 0x80 is 0x95ac9329ac4bc9b5), init 0, no final xor: CRC-64/Jones, the
//!   catalogue's CRC-64/REDIS. The comment at :16 says init all ones; the code starts at 0
//!   (:109). (fio's NVMe CRC-64, `fio_crc64_nvme`, is for its PI code, not `verify=`.)
//! - `crc32` (crc/crc32.c:75-83): poly 0x04c11db7, not reflected, init 0, no final xor: POSIX
//!   `cksum`'s CRC without the length it appends and its final inversion.
//! - `crc32c`, `crc32c-intel` (crc/crc32c.c:116-123, crc32c-intel.c:56-71): Castagnoli,
//!   reflected, init all ones, and no final inversion (below).
//! - `crc16` (crc/crc16.c:46-53, crc16.h:22-26): poly 0x8005, reflected, init 0, no final
//!   xor: CRC-16/ARC.
//! - `crc7` (crc/crc7.c:46-52, crc7.h:6-9): poly 0x09, not reflected, init 0, no final xor,
//!   the CRC in the low 7 bits: CRC-7/MMC.
//! - `sha1` (crc/sha1.c): SHA-1.
//! - `sha256` (crc/sha256.c:271-292): not SHA-256 (below).
//! - `sha512` (crc/sha512.c:199-254): SHA-512. Before fio 3.39 (commit 3ee53198) fio never
//!   finalized it: Debian's fio 3.33 stores no SHA-512 at all.
//! - `sha3-224`, `sha3-256`, `sha3-384`, `sha3-512` (crc/sha3.c): FIPS 202 SHA-3.
//! - `xxhash` (verify.c:1118-1126): XXH32 with seed 1.
//!
//! A digest is kept here as the algorithm's standard bytes, the integer ones (CRCs, XXH32)
//! little-endian. fio's header keeps some otherwise (verify.h:60-98): `sha1` as five
//! native-endian words, `sha256` and `sha512` in 64- and 128-byte slots. That is storage, not
//! the algorithm, and our header is ours anyway (`verify`'s module doc).
//!
//! Two of fio's functions are not what their names promise. Here those names keep their
//! standard meaning, as they had before the other kinds came, so blocks already written still
//! verify: fio's `crc32c` leaves out the final inversion (its value is ours inverted bit for
//! bit), and fio's `sha256` appends the message length little-endian (crc/sha256.c:287) and
//! keeps only the low byte of each state word (:291), which no SHA-256 library computes.

use crc::{Crc, Table, CRC_16_ARC, CRC_32_CKSUM, CRC_64_REDIS, CRC_7_MMC};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use sha3::{Sha3_224, Sha3_256, Sha3_384, Sha3_512};
use xxhash_rust::xxh32::Xxh32;

/// fio's `crc32`: POSIX `cksum`'s polynomial and init, but fio returns the register as it is.
const FIO_CRC_32: crc::Algorithm<u32> = crc::Algorithm {
    xorout: 0,
    check: !0x765e_7680, // CRC_32_CKSUM's check value, un-inverted
    residue: 0,
    ..CRC_32_CKSUM
};

/// XXH32's seed in fio's `fill_xxhash` and `verify_io_u_xxhash`.
const FIO_XXHASH_SEED: u32 = 1;

// Slice-by-16 tables, built at compile time: a load tool checks gigabytes per second.
static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);
static CRC32: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&FIO_CRC_32);
static CRC16: Crc<u16, Table<16>> = Crc::<u16, Table<16>>::new(&CRC_16_ARC);
static CRC7: Crc<u8, Table<16>> = Crc::<u8, Table<16>>::new(&CRC_7_MMC);

/// A `verify=` kind that stores a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumKind {
    Md5,
    Crc64,
    Crc32,
    Crc32c,
    Crc16,
    Crc7,
    Sha1,
    Sha256,
    Sha512,
    Sha3_224,
    Sha3_256,
    Sha3_384,
    Sha3_512,
    Xxhash,
}

impl ChecksumKind {
    /// Every kind, in the order of fio's `verify=` values (options.c).
    pub const ALL: [ChecksumKind; 14] = [
        ChecksumKind::Md5,
        ChecksumKind::Crc64,
        ChecksumKind::Crc32,
        ChecksumKind::Crc32c,
        ChecksumKind::Crc16,
        ChecksumKind::Crc7,
        ChecksumKind::Sha1,
        ChecksumKind::Sha256,
        ChecksumKind::Sha512,
        ChecksumKind::Sha3_224,
        ChecksumKind::Sha3_256,
        ChecksumKind::Sha3_384,
        ChecksumKind::Sha3_512,
        ChecksumKind::Xxhash,
    ];

    pub fn fio_name(self) -> &'static str {
        match self {
            ChecksumKind::Md5 => "md5",
            ChecksumKind::Crc64 => "crc64",
            ChecksumKind::Crc32 => "crc32",
            ChecksumKind::Crc32c => "crc32c",
            ChecksumKind::Crc16 => "crc16",
            ChecksumKind::Crc7 => "crc7",
            ChecksumKind::Sha1 => "sha1",
            ChecksumKind::Sha256 => "sha256",
            ChecksumKind::Sha512 => "sha512",
            ChecksumKind::Sha3_224 => "sha3-224",
            ChecksumKind::Sha3_256 => "sha3-256",
            ChecksumKind::Sha3_384 => "sha3-384",
            ChecksumKind::Sha3_512 => "sha3-512",
            ChecksumKind::Xxhash => "xxhash",
        }
    }

    /// The kind fio's `verify=name` selects (`crc32c-intel` is fio's other name for
    /// `crc32c`); `name` as fio spells it, lower case.
    pub fn from_fio_name(name: &str) -> Option<Self> {
        if name == "crc32c-intel" {
            return Some(ChecksumKind::Crc32c);
        }
        Self::ALL.into_iter().find(|kind| kind.fio_name() == name)
    }

    pub fn digest_len(self) -> usize {
        match self {
            ChecksumKind::Crc7 => 1,
            ChecksumKind::Crc16 => 2,
            ChecksumKind::Crc32 | ChecksumKind::Crc32c | ChecksumKind::Xxhash => 4,
            ChecksumKind::Crc64 => 8,
            ChecksumKind::Md5 => 16,
            ChecksumKind::Sha1 => 20,
            ChecksumKind::Sha3_224 => 28,
            ChecksumKind::Sha256 | ChecksumKind::Sha3_256 => 32,
            ChecksumKind::Sha3_384 => 48,
            ChecksumKind::Sha512 | ChecksumKind::Sha3_512 => 64,
        }
    }

    /// The digest of `parts` one after the other, `digest_len` bytes.
    pub fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        match self {
            ChecksumKind::Md5 => hash::<Md5>(parts),
            ChecksumKind::Crc64 => {
                let mut crc = CRC64.digest();
                parts.iter().for_each(|part| crc.update(part));
                crc.finalize().to_le_bytes().to_vec()
            }
            ChecksumKind::Crc32 => {
                let mut crc = CRC32.digest();
                parts.iter().for_each(|part| crc.update(part));
                crc.finalize().to_le_bytes().to_vec()
            }
            ChecksumKind::Crc32c => parts
                .iter()
                .fold(0, |crc, part| crc32c::crc32c_append(crc, part))
                .to_le_bytes()
                .to_vec(),
            ChecksumKind::Crc16 => {
                let mut crc = CRC16.digest();
                parts.iter().for_each(|part| crc.update(part));
                crc.finalize().to_le_bytes().to_vec()
            }
            ChecksumKind::Crc7 => {
                let mut crc = CRC7.digest();
                parts.iter().for_each(|part| crc.update(part));
                vec![crc.finalize()]
            }
            ChecksumKind::Sha1 => hash::<Sha1>(parts),
            ChecksumKind::Sha256 => hash::<Sha256>(parts),
            ChecksumKind::Sha512 => hash::<Sha512>(parts),
            ChecksumKind::Sha3_224 => hash::<Sha3_224>(parts),
            ChecksumKind::Sha3_256 => hash::<Sha3_256>(parts),
            ChecksumKind::Sha3_384 => hash::<Sha3_384>(parts),
            ChecksumKind::Sha3_512 => hash::<Sha3_512>(parts),
            ChecksumKind::Xxhash => {
                let mut xxh = Xxh32::new(FIO_XXHASH_SEED);
                parts.iter().for_each(|part| xxh.update(part));
                xxh.digest().to_le_bytes().to_vec()
            }
        }
    }
}

fn hash<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
    let mut hasher = D::new();
    parts.iter().for_each(|part| hasher.update(part));
    hasher.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// The CRC catalogue's check input, and one long enough for the slice-by-16 loops, many
    /// hash blocks and XXH32's stripes.
    fn inputs() -> [Vec<u8>; 2] {
        [b"123456789".to_vec(), b"0123456789".repeat(100)]
    }

    /// Known answers over `inputs()`, computed by fio 3.42's own functions (crc/*.c and
    /// crc/xxhash.c built into a small C harness, `CONFIG_LITTLE_ENDIAN` as fio's configure
    /// sets it), as our digests keep them. Where fio stores them otherwise the comment says
    /// how. The short input's CRC answers are also the catalogue's check values, named. A
    /// different polynomial, init, reflection or final xor, another XXH variant or seed, gives
    /// another answer.
    #[test]
    fn each_kind_gives_fios_answer() {
        let expected: [(ChecksumKind, [&str; 2]); 14] = [
            (
                ChecksumKind::Md5,
                [
                    "25f9e794323b453885f5181f1b624d0b",
                    "427008b3fe192f663d665f56cd75716c",
                ],
            ),
            // CRC-64/REDIS check 0xe9c6d914c4b8d9ca.
            (
                ChecksumKind::Crc64,
                ["cad9b8c414d9c6e9", "3149982042dbc799"],
            ),
            // 0x89a1897f: POSIX cksum's check (0x765e7680) without its final inversion.
            (ChecksumKind::Crc32, ["7f89a189", "d7e2b42b"]),
            // CRC-32C check 0xe3069283; fio's crc32c gives these inverted (7c6df91c, 53222865).
            (ChecksumKind::Crc32c, ["839206e3", "acddd79a"]),
            // CRC-16/ARC check 0xbb3d.
            (ChecksumKind::Crc16, ["3dbb", "6c6a"]),
            // CRC-7/MMC check 0x75.
            (ChecksumKind::Crc7, ["75", "30"]),
            // fio stores the five words native-endian: 1dbcc3f7 73048e80 ...
            (
                ChecksumKind::Sha1,
                [
                    "f7c3bc1d808e04732adf679965ccc34ca7ae3441",
                    "f2b2f38b074c387a1415c3afb834c7232f31b097",
                ],
            ),
            // Standard SHA-256 (fio's differs, see the module doc).
            (
                ChecksumKind::Sha256,
                [
                    "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225",
                    "ab6c5f3237f551d208fc2ca5225a4cca20b3fd638794a804f0ed5549d5041734",
                ],
            ),
            (
                ChecksumKind::Sha512,
                [
                    "d9e6762dd1c8eaf6d61b3c6192fc408d4d6d5f1176d0c29169bc24e71c3f274a\
                     d27fcd5811b313d681f7e55ec02d73d499c95455b6b5bb503acf574fba8ffe85",
                    "0d12453640105df025424f8d339f9eb73b49c172d527294d47d078b2df8caa8d\
                     8d1e7cd27231442e18d03bc464d2b6c1bb3aa274fadfae4341d0fca44b3a48e1",
                ],
            ),
            (
                ChecksumKind::Sha3_224,
                [
                    "5795c3d628fd638c9835a4c79a55809f265068c88729a1a3fcdf8522",
                    "55998fdac382f991caa0e13c578c819da3b383ef97f3f0a07fcb0b46",
                ],
            ),
            (
                ChecksumKind::Sha3_256,
                [
                    "87cd084d190e436f147322b90e7384f6a8e0676c99d21ef519ea718e51d45f9c",
                    "118903585de22d50a3aa140b1a7efb15e4bbfbb637085db6295aa3730b120922",
                ],
            ),
            (
                ChecksumKind::Sha3_384,
                [
                    "8b90ede4d095409f1a12492c2520599683a9478dc70b7566\
                     d23b3e41ece8538c6cde92382a5e38786490375c54672abf",
                    "18356d36983de995c251a853b711adc06cbf19a66e5dfc6e\
                     ecbb14351f881e2444a4ae1093489515549432f8b4ab0f5f",
                ],
            ),
            (
                ChecksumKind::Sha3_512,
                [
                    "e1e44d20556e97a180b6dd3ed7ae5c465cafd553fa8747dca038fb95635b77a3\
                     7318f7ddf7aec1f6c3c14bb160ba2497007decf38dd361cab199e3b8c8fe1f5c",
                    "570e5aefbab0d6c94f67597a946b5683a35f65c5cacb59caba4dd481ea728033\
                     e499dddcbb18df17f96cb1f8484ee69e09cc3cb05976fcad59fe0021a63ef70d",
                ],
            ),
            // XXH32 with seed 1.
            (ChecksumKind::Xxhash, ["8c9161f2", "b18b7b84"]),
        ];
        for (kind, answers) in expected {
            for (input, answer) in inputs().iter().zip(answers) {
                let digest = kind.digest(&[input]);
                assert_eq!(hex(&digest), answer, "{kind:?} over {} bytes", input.len());
                assert_eq!(digest.len(), kind.digest_len(), "{kind:?}");
            }
        }
    }

    /// The verify header's digest covers the header and then the data: two parts must give
    /// the digest of the two joined, wherever the split falls.
    #[test]
    fn parts_digest_as_one() {
        let whole = b"0123456789".repeat(100);
        for kind in ChecksumKind::ALL {
            let at_once = kind.digest(&[&whole]);
            for split in [0, 1, 40, 41, 999, 1000] {
                let (head, tail) = whole.split_at(split);
                assert_eq!(
                    kind.digest(&[head, tail]),
                    at_once,
                    "{kind:?} split {split}"
                );
            }
        }
    }

    #[test]
    fn names_are_fios() {
        let names: Vec<&str> = ChecksumKind::ALL.iter().map(|k| k.fio_name()).collect();
        assert_eq!(
            names,
            [
                "md5", "crc64", "crc32", "crc32c", "crc16", "crc7", "sha1", "sha256", "sha512",
                "sha3-224", "sha3-256", "sha3-384", "sha3-512", "xxhash"
            ]
        );
        for kind in ChecksumKind::ALL {
            assert_eq!(ChecksumKind::from_fio_name(kind.fio_name()), Some(kind));
        }
        assert_eq!(
            ChecksumKind::from_fio_name("crc32c-intel"),
            Some(ChecksumKind::Crc32c)
        );
        // fio has no SHA-224 or SHA-384 (options.c refuses both).
        assert_eq!(ChecksumKind::from_fio_name("sha224"), None);
        assert_eq!(ChecksumKind::from_fio_name("sha384"), None);
    }
}
