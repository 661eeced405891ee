//! Axes for the report's charts: where a value lands on an axis (linear or logarithmic) and
//! which tick values to draw, with labels in the units people read (IOPS with k/M, bytes per
//! second in binary units as fio prints them, latency in ns/µs/ms/s, time in ms/s/min/h).
//!
//! Tick values follow the usual "1, 2, 5 times a power of ten" rule so labels stay round. A
//! linear axis starts at zero (rates and counts are compared against nothing, not against the
//! smallest sample); a logarithmic axis (latency) spans the data between two round values.
//!
//! Every function here returns finite numbers for any input: NaN, infinities and negatives
//! are treated as zero (linear) or as the smallest positive value (logarithmic), so no `NaN`
//! reaches the SVG.

/// What an axis measures; picks the unit prefixes of its labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A count per second (IOPS): plain, k, M, G, T, P, E (powers of 1000).
    PerSecond,
    /// Bytes per second: B/s, KiB/s, MiB/s ... EiB/s (powers of 1024, as fio prints them).
    BytesPerSecond,
    /// A duration in nanoseconds (latency): ns, µs, ms, s.
    Nanoseconds,
    /// Elapsed run time in milliseconds: ms, s, min, h.
    Milliseconds,
    /// A fraction in 0..=1, labelled as a percentage.
    Fraction,
}

/// The steps of one unit family: (size of the step in base units, suffix), smallest first.
fn unit_steps(unit: Unit) -> &'static [(f64, &'static str)] {
    const PER_SECOND: &[(f64, &str)] = &[
        (1.0, ""),
        (1e3, "k"),
        (1e6, "M"),
        (1e9, "G"),
        (1e12, "T"),
        (1e15, "P"),
        (1e18, "E"),
    ];
    const BYTES: &[(f64, &str)] = &[
        (1.0, " B/s"),
        (1024.0, " KiB/s"),
        (1_048_576.0, " MiB/s"),
        (1_073_741_824.0, " GiB/s"),
        (1_099_511_627_776.0, " TiB/s"),
        (1_125_899_906_842_624.0, " PiB/s"),
        (1_152_921_504_606_846_976.0, " EiB/s"),
    ];
    const NANOS: &[(f64, &str)] = &[(1.0, " ns"), (1e3, " µs"), (1e6, " ms"), (1e9, " s")];
    const MILLIS: &[(f64, &str)] = &[(1.0, " ms"), (1e3, " s"), (60e3, " min"), (3_600e3, " h")];
    const FRACTION: &[(f64, &str)] = &[(0.01, "%")];
    match unit {
        Unit::PerSecond => PER_SECOND,
        Unit::BytesPerSecond => BYTES,
        Unit::Nanoseconds => NANOS,
        Unit::Milliseconds => MILLIS,
        Unit::Fraction => FRACTION,
    }
}

/// The unit step to label `value` with: the largest whose size is at most `value`, except
/// that run time switches up only at twice the step (so "90 s", not "1.5 min").
fn unit_step_for(unit: Unit, value: f64) -> (f64, &'static str) {
    let steps = unit_steps(unit);
    let threshold = if unit == Unit::Milliseconds { 2.0 } else { 1.0 };
    let mut chosen = steps[0];
    for &step in steps {
        if value >= step.0 * threshold {
            chosen = step;
        }
    }
    chosen
}

/// `v` if it is a finite number at least zero, else zero.
pub fn non_negative(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        0.0
    }
}

/// A number with three significant digits at most and no trailing zeros: 1234 -> "1234",
/// 12.345 -> "12.3", 1.5 -> "1.5", 0.012 -> "0.012".
pub fn format_significant(v: f64) -> String {
    let v = non_negative(v);
    let text = if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        // Three significant digits below one: 0.0123 has its first digit at 10^-2.
        let decimals = (2.0 - v.log10().floor()).clamp(0.0, 12.0) as usize;
        format!("{v:.decimals$}")
    };
    trim_zeros(text)
}

/// "1.50" -> "1.5", "2.00" -> "2", "100" -> "100".
fn trim_zeros(text: String) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A value with its unit, three significant digits: `format_value(Unit::PerSecond, 12345.0)`
/// is "12.3k", `format_value(Unit::BytesPerSecond, 3.0 * 1024.0 * 1024.0)` is "3 MiB/s",
/// `format_value(Unit::Nanoseconds, 1500.0)` is "1.5 µs".
pub fn format_value(unit: Unit, v: f64) -> String {
    let v = non_negative(v);
    let (size, suffix) = unit_step_for(unit, v);
    format!("{}{}", format_significant(v / size), suffix)
}

/// The round step ("1, 2 or 5 times a power of ten") nearest above `raw`; 1 for anything that
/// is not a positive finite number.
pub fn nice_step(raw: f64) -> f64 {
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let mantissa = raw / magnitude;
    let nice = if mantissa <= 1.0 + 1e-9 {
        1.0
    } else if mantissa <= 2.0 + 1e-9 {
        2.0
    } else if mantissa <= 5.0 + 1e-9 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Where values go along an axis, as a fraction of its length (0 at the start, 1 at the end).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// `min..=max` mapped linearly.
    Linear { min: f64, max: f64 },
    /// `min..=max` (both positive) mapped by their logarithms.
    Log { min: f64, max: f64 },
}

impl Scale {
    /// The fraction of the axis at which `v` lies, clamped to 0..=1; values outside the
    /// domain (or not finite) land on its nearer end.
    pub fn fraction(&self, v: f64) -> f64 {
        let raw = match *self {
            Scale::Linear { min, max } => {
                if max.is_nan() || min.is_nan() || max <= min {
                    return 0.5;
                }
                (v - min) / (max - min)
            }
            Scale::Log { min, max } => {
                if min.is_nan() || max.is_nan() || min <= 0.0 || max <= min {
                    return 0.5;
                }
                let v = if v.is_finite() && v > min { v } else { min };
                (v.log10() - min.log10()) / (max.log10() - min.log10())
            }
        };
        if raw.is_nan() {
            0.0
        } else {
            raw.clamp(0.0, 1.0)
        }
    }

    /// Map `v` onto the pixel range `start..end` (which may run backwards, as a y axis does).
    pub fn map(&self, v: f64, start: f64, end: f64) -> f64 {
        start + self.fraction(v) * (end - start)
    }
}

/// One tick: where it is and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub value: f64,
    pub label: String,
}

/// A finished axis: its scale and its ticks.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub scale: Scale,
    pub ticks: Vec<Tick>,
}

/// Ticks of a linear axis are this many, give or take; a bound on the loop as well.
const LINEAR_TICKS_TARGET: f64 = 5.0;
const LINEAR_TICKS_MAX: usize = 12;

/// A linear axis from zero to a round value at or above `max`, labelled in one unit (the one
/// that suits its top), e.g. 0, 200 MiB/s, 400 MiB/s ... An empty or all-zero range gives
/// the axis of `0..1` in the smallest unit.
pub fn linear_axis(unit: Unit, max: f64) -> Axis {
    let max = non_negative(max);
    let (size, suffix) = if unit == Unit::Fraction {
        unit_steps(unit)[0]
    } else {
        unit_step_for(unit, max)
    };
    let scaled_max = max / size;
    let step = nice_step(scaled_max / LINEAR_TICKS_TARGET);
    let mut steps = (scaled_max / step - 1e-9).ceil();
    if steps.is_nan() || steps < 1.0 {
        steps = 1.0;
    }
    let steps = (steps as usize).min(LINEAR_TICKS_MAX);
    let top = step * steps as f64;
    let decimals = (-step.log10().floor()).clamp(0.0, 12.0) as usize;
    let ticks = (0..=steps)
        .map(|k| {
            let scaled = step * k as f64;
            // Zero is zero in any unit; leaving the unit off keeps the corner uncluttered.
            let label = if k == 0 {
                "0".to_string()
            } else {
                format!("{}{}", trim_zeros(format!("{scaled:.decimals$}")), suffix)
            };
            Tick {
                value: scaled * size,
                label,
            }
        })
        .collect();
    Axis {
        scale: Scale::Linear {
            min: 0.0,
            max: top * size,
        },
        ticks,
    }
}

/// The "1, 2, 5" value at or below `v` (`v` positive).
fn round_125_below(v: f64) -> f64 {
    let magnitude = 10f64.powf(v.log10().floor());
    let mantissa = v / magnitude;
    let nice = if mantissa >= 5.0 - 1e-9 {
        5.0
    } else if mantissa >= 2.0 - 1e-9 {
        2.0
    } else {
        1.0
    };
    nice * magnitude
}

/// The "1, 2, 5" value at or above `v` (`v` positive).
fn round_125_above(v: f64) -> f64 {
    nice_step(v)
}

/// The "1, 2, 5" value after `v` (itself such a value).
fn next_125(v: f64) -> f64 {
    let magnitude = 10f64.powf((v.log10() + 1e-9).floor());
    let mantissa = (v / magnitude).round();
    if mantissa < 2.0 {
        2.0 * magnitude
    } else if mantissa < 5.0 {
        5.0 * magnitude
    } else {
        10.0 * magnitude
    }
}

/// Below this many decades a log axis ticks at 1, 2 and 5; above, at powers of ten only.
const LOG_DECADES_FOR_125_TICKS: f64 = 3.0;
const LOG_TICKS_MAX: usize = 64;

/// A logarithmic axis spanning `min..=max` between round ("1, 2, 5") values, each tick
/// labelled in its own unit (10 µs, 100 µs, 1 ms). Values below 1 are drawn at 1 (a log axis
/// has no zero; 1 ns is below anything a clock here measures).
pub fn log_axis(unit: Unit, min: f64, max: f64) -> Axis {
    let min = non_negative(min).max(1.0);
    let max = non_negative(max).max(min);
    let low = round_125_below(min);
    let mut high = round_125_above(max);
    if high <= low {
        high = next_125(low);
    }
    let decades = high.log10() - low.log10();
    let mut ticks = Vec::new();
    if decades < LOG_DECADES_FOR_125_TICKS {
        let mut v = low;
        while v <= high * (1.0 + 1e-9) && ticks.len() < LOG_TICKS_MAX {
            ticks.push(v);
            v = next_125(v);
        }
    } else {
        let mut exponent = low.log10().ceil();
        while 10f64.powf(exponent) <= high * (1.0 + 1e-9) && ticks.len() < LOG_TICKS_MAX {
            ticks.push(10f64.powf(exponent));
            exponent += 1.0;
        }
    }
    Axis {
        scale: Scale::Log {
            min: low,
            max: high,
        },
        ticks: ticks
            .into_iter()
            .map(|value| Tick {
                value,
                label: format_value(unit, value),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(axis: &Axis) -> Vec<&str> {
        axis.ticks.iter().map(|t| t.label.as_str()).collect()
    }

    #[test]
    fn nice_steps_are_one_two_five() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.0), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(230.0), 500.0);
        assert!((nice_step(0.03) - 0.05).abs() < 1e-12);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(f64::NAN), 1.0);
        assert_eq!(nice_step(-3.0), 1.0);
    }

    #[test]
    fn iops_axis_uses_k_and_round_ticks() {
        let axis = linear_axis(Unit::PerSecond, 48_300.0);
        assert_eq!(labels(&axis), ["0", "10k", "20k", "30k", "40k", "50k"]);
        assert_eq!(
            axis.scale,
            Scale::Linear {
                min: 0.0,
                max: 50_000.0
            }
        );
        let axis = linear_axis(Unit::PerSecond, 1_700_000.0);
        assert_eq!(labels(&axis), ["0", "0.5M", "1M", "1.5M", "2M"]);
    }

    #[test]
    fn bandwidth_axis_uses_binary_units() {
        let mib = 1_048_576.0;
        let axis = linear_axis(Unit::BytesPerSecond, 900.0 * mib);
        assert_eq!(
            labels(&axis),
            [
                "0",
                "200 MiB/s",
                "400 MiB/s",
                "600 MiB/s",
                "800 MiB/s",
                "1000 MiB/s"
            ]
        );
        let axis = linear_axis(Unit::BytesPerSecond, 2.2 * 1024.0 * mib);
        assert_eq!(
            labels(&axis),
            [
                "0",
                "0.5 GiB/s",
                "1 GiB/s",
                "1.5 GiB/s",
                "2 GiB/s",
                "2.5 GiB/s"
            ]
        );
    }

    #[test]
    fn zero_and_garbage_give_a_unit_axis() {
        for max in [0.0, -5.0, f64::NAN, f64::NEG_INFINITY] {
            let axis = linear_axis(Unit::PerSecond, max);
            assert_eq!(labels(&axis), ["0", "1"], "max {max}");
            assert_eq!(axis.scale, Scale::Linear { min: 0.0, max: 1.0 });
        }
    }

    #[test]
    fn huge_values_stay_finite() {
        for unit in [Unit::PerSecond, Unit::BytesPerSecond, Unit::Nanoseconds] {
            let axis = linear_axis(unit, 1e300);
            assert!(axis.ticks.len() >= 2 && axis.ticks.len() <= LINEAR_TICKS_MAX + 1);
            for tick in &axis.ticks {
                assert!(tick.value.is_finite());
                assert!(!tick.label.contains("NaN") && !tick.label.contains("inf"));
            }
            let axis = log_axis(unit, 1.0, u64::MAX as f64);
            assert!(axis.ticks.len() >= 2, "{:?}", axis.ticks);
        }
        // Infinity itself is not a value: it reads as zero.
        assert_eq!(
            labels(&linear_axis(Unit::PerSecond, f64::INFINITY)),
            ["0", "1"]
        );
    }

    #[test]
    fn time_axis_switches_units() {
        assert_eq!(
            labels(&linear_axis(Unit::Milliseconds, 900.0)),
            ["0", "200 ms", "400 ms", "600 ms", "800 ms", "1000 ms"]
        );
        assert_eq!(
            labels(&linear_axis(Unit::Milliseconds, 10_000.0)),
            ["0", "2 s", "4 s", "6 s", "8 s", "10 s"]
        );
        assert_eq!(
            labels(&linear_axis(Unit::Milliseconds, 60_000.0)),
            ["0", "20 s", "40 s", "60 s"]
        );
        assert_eq!(
            labels(&linear_axis(Unit::Milliseconds, 3_600_000.0)),
            ["0", "20 min", "40 min", "60 min"]
        );
    }

    #[test]
    fn fraction_axis_is_percent() {
        assert_eq!(
            labels(&linear_axis(Unit::Fraction, 1.0)),
            ["0", "20%", "40%", "60%", "80%", "100%"]
        );
    }

    #[test]
    fn log_axis_narrow_range_ticks_at_125() {
        let axis = log_axis(Unit::Nanoseconds, 80_000.0, 120_000.0);
        assert_eq!(
            axis.scale,
            Scale::Log {
                min: 50_000.0,
                max: 200_000.0
            }
        );
        assert_eq!(labels(&axis), ["50 µs", "100 µs", "200 µs"]);
    }

    #[test]
    fn log_axis_wide_range_ticks_at_decades() {
        let axis = log_axis(Unit::Nanoseconds, 3_000.0, 40_000_000.0);
        assert_eq!(labels(&axis), ["10 µs", "100 µs", "1 ms", "10 ms"]);
    }

    #[test]
    fn log_axis_of_one_value_or_zeros() {
        let axis = log_axis(Unit::Nanoseconds, 100.0, 100.0);
        assert_eq!(labels(&axis), ["100 ns", "200 ns"]);
        let axis = log_axis(Unit::Nanoseconds, 0.0, 0.0);
        assert_eq!(labels(&axis), ["1 ns", "2 ns"]);
        let axis = log_axis(Unit::Nanoseconds, f64::NAN, f64::INFINITY);
        assert_eq!(labels(&axis), ["1 ns", "2 ns"]);
    }

    #[test]
    fn formats_with_units() {
        assert_eq!(format_value(Unit::PerSecond, 0.0), "0");
        assert_eq!(format_value(Unit::PerSecond, 950.0), "950");
        assert_eq!(format_value(Unit::PerSecond, 12_345.0), "12.3k");
        assert_eq!(format_value(Unit::PerSecond, 2_500_000.0), "2.5M");
        assert_eq!(format_value(Unit::BytesPerSecond, 512.0), "512 B/s");
        assert_eq!(format_value(Unit::BytesPerSecond, 4096.0), "4 KiB/s");
        assert_eq!(
            format_value(Unit::BytesPerSecond, 1.5 * 1_073_741_824.0),
            "1.5 GiB/s"
        );
        assert_eq!(format_value(Unit::Nanoseconds, 850.0), "850 ns");
        assert_eq!(format_value(Unit::Nanoseconds, 1_500.0), "1.5 µs");
        assert_eq!(format_value(Unit::Nanoseconds, 12_340_000.0), "12.3 ms");
        assert_eq!(format_value(Unit::Nanoseconds, 3e9), "3 s");
        assert_eq!(format_value(Unit::Milliseconds, 90_000.0), "90 s");
        assert_eq!(format_value(Unit::Fraction, 0.999), "99.9%");
        assert_eq!(format_value(Unit::PerSecond, f64::NAN), "0");
        assert_eq!(format_significant(0.0123), "0.0123");
        assert_eq!(format_significant(99.96), "100");
    }

    #[test]
    fn scales_map_ends_and_clamp() {
        let linear = Scale::Linear {
            min: 0.0,
            max: 200.0,
        };
        assert_eq!(linear.fraction(0.0), 0.0);
        assert_eq!(linear.fraction(50.0), 0.25);
        assert_eq!(linear.fraction(200.0), 1.0);
        assert_eq!(linear.fraction(500.0), 1.0);
        assert_eq!(linear.fraction(-1.0), 0.0);
        assert_eq!(linear.fraction(f64::NAN), 0.0);
        // A y axis runs from the bottom pixel up.
        assert_eq!(linear.map(50.0, 300.0, 100.0), 250.0);

        let log = Scale::Log {
            min: 10.0,
            max: 1000.0,
        };
        assert_eq!(log.fraction(10.0), 0.0);
        assert!((log.fraction(100.0) - 0.5).abs() < 1e-12);
        assert_eq!(log.fraction(1000.0), 1.0);
        assert_eq!(log.fraction(0.0), 0.0);
        assert_eq!(log.fraction(f64::INFINITY), 0.0);

        let degenerate = Scale::Linear { min: 5.0, max: 5.0 };
        assert_eq!(degenerate.fraction(5.0), 0.5);
    }

    proptest! {
        #[test]
        fn linear_axis_covers_its_max(max in 0.0f64..1e20) {
            let unit = Unit::BytesPerSecond;
            let axis = linear_axis(unit, max);
            let Scale::Linear { min, max: top } = axis.scale else { panic!("not linear") };
            prop_assert_eq!(min, 0.0);
            prop_assert!(top >= max * (1.0 - 1e-9));
            prop_assert!(top.is_finite() && top > 0.0);
            prop_assert!(axis.ticks.len() >= 2 && axis.ticks.len() <= LINEAR_TICKS_MAX + 1);
            for pair in axis.ticks.windows(2) {
                prop_assert!(pair[0].value < pair[1].value);
            }
        }

        #[test]
        fn log_axis_covers_its_range(a in 0.0f64..1e19, b in 0.0f64..1e19) {
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            let axis = log_axis(Unit::Nanoseconds, low, high);
            let Scale::Log { min, max } = axis.scale else { panic!("not log") };
            prop_assert!(min <= low.max(1.0) * (1.0 + 1e-9));
            prop_assert!(max >= high * (1.0 - 1e-9));
            prop_assert!(max > min);
            prop_assert!(!axis.ticks.is_empty());
            for tick in &axis.ticks {
                prop_assert!(tick.value >= min * (1.0 - 1e-9) && tick.value <= max * (1.0 + 1e-9));
            }
        }

        #[test]
        fn fraction_is_always_in_unit_range(v in proptest::num::f64::ANY, lo in -1e6f64..1e6, span in 0.0f64..1e6) {
            for scale in [Scale::Linear { min: lo, max: lo + span }, Scale::Log { min: lo.abs() + 1.0, max: lo.abs() + 1.0 + span }] {
                let f = scale.fraction(v);
                prop_assert!((0.0..=1.0).contains(&f), "{:?} {} -> {}", scale, v, f);
            }
        }
    }
}
