//! `iscsi-ctl write` leaves its data durable: against a target whose LUN has a volatile
//! write cache (a model: writes stay in memory until SYNCHRONIZE CACHE or FUA flushes them,
//! and a "power cut" drops whatever was not flushed), every reported write survives the cut
//! by default and with `--fua`, and only `--no-sync` loses it.

use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::backend::Backend;
use gateway::disk::{LogicalUnit, LuConfig, LunMap};
use gateway::server::{self, TargetConfig, TargetNodeConfig};
use system_tests::{run_tool, workspace_binary, TempDir};

const IQN: &str = "iqn.2026-11.test:volatile";
const LUN_BYTES: u64 = 1 << 20;

/// A disk with a volatile write cache: `write_at` lands in the cache, `flush` moves the
/// cache to the medium, and a power cut is "read the medium alone".
#[derive(Default)]
struct VolatileCacheDisk {
    medium: Mutex<Vec<u8>>,
    cache: Mutex<Vec<(u64, Vec<u8>)>>,
}

impl VolatileCacheDisk {
    fn new() -> VolatileCacheDisk {
        VolatileCacheDisk {
            medium: Mutex::new(vec![0; LUN_BYTES as usize]),
            cache: Mutex::default(),
        }
    }

    /// What survives a power cut now.
    fn after_power_cut(&self) -> Vec<u8> {
        self.medium.lock().unwrap().clone()
    }
}

/// The shared disk behind the logical unit (the test keeps a handle to cut the power).
struct SharedDisk(Arc<VolatileCacheDisk>);

impl Backend for SharedDisk {
    fn size_bytes(&self) -> u64 {
        LUN_BYTES
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = offset as usize;
        buf.copy_from_slice(&self.0.medium.lock().unwrap()[start..start + buf.len()]);
        for (at, data) in self.0.cache.lock().unwrap().iter() {
            for (i, byte) in data.iter().enumerate() {
                let position = *at as usize + i;
                if (start..start + buf.len()).contains(&position) {
                    buf[position - start] = *byte;
                }
            }
        }
        Ok(())
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.cache.lock().unwrap().push((offset, data.to_vec()));
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        let mut medium = self.0.medium.lock().unwrap();
        for (at, data) in self.0.cache.lock().unwrap().drain(..) {
            medium[at as usize..at as usize + data.len()].copy_from_slice(&data);
        }
        Ok(())
    }
    fn unmap(&self, _offset: u64, _len: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn kind(&self) -> &'static str {
        "volatile-cache model"
    }
    fn thin(&self) -> bool {
        false
    }
}

fn ctl(args: &[&str]) -> Output {
    let path = workspace_binary("tools", "iscsi-ctl");
    run_tool(&path.to_string_lossy(), args, Duration::from_secs(30))
}

/// Writes 64 KiB with `iscsi-ctl write EXTRA...` to a fresh volatile-cache LUN and returns
/// (what was written, what survives a power cut right after the tool returned).
fn write_then_cut_power(extra: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let disk = Arc::new(VolatileCacheDisk::new());
    let for_builder = Arc::clone(&disk);
    let builder = move |node: &TargetNodeConfig, tpgt: u16| {
        let mut map = LunMap::new();
        let unit = LogicalUnit::new(
            Box::new(SharedDisk(Arc::clone(&for_builder))),
            LuConfig::for_name("volatile"),
        );
        map.insert(0, Arc::new(unit));
        Ok(server::disk_luns(&node.iqn, tpgt, map))
    };
    let node = TargetNodeConfig::new(IQN, vec![(0, "model".into())]);
    let mut config = TargetConfig::new("127.0.0.1:0".parse().unwrap(), node);
    config.threads = Some(1);
    let target = server::start_with(config, &builder).expect("target starts");
    let dir = TempDir::new("ctl-durability").unwrap();
    let input: PathBuf = dir.join("data");
    let data: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 251) as u8 + 1).collect();
    std::fs::write(&input, &data).unwrap();
    let url = format!("iscsi://{}/{IQN}/0", target.addrs()[0]);
    let input_text = input.to_string_lossy().into_owned();
    let mut args = vec!["write", url.as_str(), "--lba", "16", "--in", &input_text];
    args.extend_from_slice(extra);
    let out = ctl(&args);
    assert!(
        out.status.success(),
        "iscsi-ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let survived = disk.after_power_cut()[16 * 512..16 * 512 + data.len()].to_vec();
    drop(target);
    (data, survived)
}

#[test]
fn write_survives_a_power_cut_by_default() {
    let (written, survived) = write_then_cut_power(&[]);
    assert!(
        survived == written,
        "the default write was lost in the cache"
    );
}

#[test]
fn write_with_fua_survives_a_power_cut() {
    let (written, survived) = write_then_cut_power(&["--fua"]);
    assert!(survived == written, "a FUA write was lost in the cache");
}

#[test]
fn write_with_no_sync_may_be_lost_the_model_shows_it() {
    let (written, survived) = write_then_cut_power(&["--no-sync"]);
    assert!(
        survived != written,
        "the model keeps unflushed writes: it tests nothing"
    );
    assert!(survived.iter().all(|&b| b == 0));
}
