//! Command-line arguments the `tools` binaries share.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use datapath::transport::TransportKind;

/// `--transport`'s parser: the data path's own words for its transports
/// ([`TransportKind`]), listed in `--help`.
pub fn transport_parser() -> impl TypedValueParser<Value = TransportKind> {
    PossibleValuesParser::new(TransportKind::ALL.map(TransportKind::name))
        .try_map(|word| word.parse::<TransportKind>())
}
