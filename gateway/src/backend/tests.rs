use super::*;

fn temp_path(name: &str) -> std::path::PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("gateway-backend-{}-{n}-{name}", std::process::id()))
}

#[test]
fn sizes_parse_with_binary_suffixes() {
    assert_eq!(parse_size("4096").unwrap(), 4096);
    assert_eq!(parse_size("64K").unwrap(), 64 << 10);
    assert_eq!(parse_size("1m").unwrap(), 1 << 20);
    assert_eq!(parse_size("1G").unwrap(), 1 << 30);
    assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
    assert_eq!(parse_size("2T").unwrap(), 2 << 40);
    for bad in [
        "",
        "G",
        "1X",
        "-1",
        "1.5G",
        "99999999999999999999",
        "16777216T",
    ] {
        assert!(parse_size(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn specs_build_the_named_backend() {
    let ram = backend_from_spec("ram:1G").unwrap();
    assert_eq!((ram.kind(), ram.size_bytes()), ("ram", 1 << 30));
    let null = backend_from_spec("null:100G").unwrap();
    assert_eq!((null.kind(), null.size_bytes()), ("null", 100 << 30));
    for bad in ["ram", "ram:", "ram:0", "disk:1G", "file:", "", "null:x"] {
        assert!(backend_from_spec(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn ram_reads_back_writes_across_chunks_and_costs_nothing_until_written() {
    let ram = RamBackend::new(1 << 30);
    assert_eq!(ram.allocated_bytes(), 0);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let offset = CHUNK_BYTES_FOR_TESTS - 1000;
    ram.write_at(offset, &data).unwrap();
    let mut back = vec![0xffu8; data.len()];
    ram.read_at(offset, &mut back).unwrap();
    assert_eq!(back, data);
    assert!(ram.allocated_bytes() <= 5 * CHUNK_BYTES_FOR_TESTS);
    let mut untouched = vec![0xffu8; 512];
    ram.read_at(1 << 29, &mut untouched).unwrap();
    assert!(untouched.iter().all(|&b| b == 0));
}

const CHUNK_BYTES_FOR_TESTS: u64 = 64 * 1024;

#[test]
fn ram_unmap_zeroes_and_frees_whole_chunks() {
    let ram = RamBackend::new(4 * CHUNK_BYTES_FOR_TESTS);
    ram.write_at(0, &vec![7u8; 4 * CHUNK_BYTES_FOR_TESTS as usize])
        .unwrap();
    ram.unmap(100, 2 * CHUNK_BYTES_FOR_TESTS).unwrap();
    let mut back = vec![0u8; 4 * CHUNK_BYTES_FOR_TESTS as usize];
    ram.read_at(0, &mut back).unwrap();
    assert!(back[..100].iter().all(|&b| b == 7));
    assert!(back[100..100 + 2 * CHUNK_BYTES_FOR_TESTS as usize]
        .iter()
        .all(|&b| b == 0));
    assert!(back[100 + 2 * CHUNK_BYTES_FOR_TESTS as usize..]
        .iter()
        .all(|&b| b == 7));
    // Only chunk 1 was covered entirely.
    assert_eq!(ram.allocated_bytes(), 3 * CHUNK_BYTES_FOR_TESTS);
    assert_eq!(
        ram.mapped_extent(0, 4 * CHUNK_BYTES_FOR_TESTS).unwrap(),
        (true, CHUNK_BYTES_FOR_TESTS)
    );
    assert_eq!(
        ram.mapped_extent(CHUNK_BYTES_FOR_TESTS, 3 * CHUNK_BYTES_FOR_TESTS)
            .unwrap(),
        (false, CHUNK_BYTES_FOR_TESTS)
    );
}

#[test]
fn out_of_range_requests_are_errors_not_panics() {
    let ram = RamBackend::new(1000);
    let mut buf = [0u8; 10];
    assert!(ram.read_at(995, &mut buf).is_err());
    assert!(ram.write_at(u64::MAX - 2, &buf).is_err());
    assert!(ram.unmap(990, 11).is_err());
    let null = NullBackend::new(1000);
    assert!(null.read_at(991, &mut buf).is_err());
    assert!(null.write_at(990, &buf).is_ok());
}

#[test]
fn null_reads_zeros_and_drops_writes() {
    let null = NullBackend::new(1 << 20);
    null.write_at(0, &[9u8; 512]).unwrap();
    let mut back = [1u8; 512];
    null.read_at(0, &mut back).unwrap();
    assert_eq!(back, [0u8; 512]);
}

#[test]
fn file_backend_creates_writes_reads_and_punches_holes() {
    let path = temp_path("lun.img");
    let spec = format!("file:{}:1M", path.display());
    let file = backend_from_spec(&spec).unwrap();
    assert_eq!((file.kind(), file.size_bytes()), ("file", 1 << 20));
    assert!(file.thin());
    file.write_at(4096, &[0xabu8; 8192]).unwrap();
    file.flush().unwrap();
    file.unmap(4096, 4096).unwrap();
    let mut back = vec![0u8; 8192];
    file.read_at(4096, &mut back).unwrap();
    assert!(back[..4096].iter().all(|&b| b == 0));
    assert!(back[4096..].iter().all(|&b| b == 0xab));
    drop(file);
    // Reopened without a size, the file keeps its size and contents.
    let again = backend_from_spec(&format!("file:{}", path.display())).unwrap();
    assert_eq!(again.size_bytes(), 1 << 20);
    let mut block = [0u8; 16];
    again.read_at(8192, &mut block).unwrap();
    assert_eq!(block, [0xab; 16]);
    drop(again);
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(format!("{}.identity", path.display())).unwrap();
}

#[test]
fn file_backend_needs_a_size_to_create() {
    let path = temp_path("missing.img");
    let error = backend_from_spec(&format!("file:{}", path.display()))
        .err()
        .unwrap();
    assert!(matches!(error, BackendError::MissingSize { .. }), "{error}");
}

#[test]
fn an_existing_file_of_another_size_is_refused_unless_grow_says_so() {
    let path = temp_path("sized.img");
    let spec = |size: &str| format!("file:{}:{size}", path.display());
    drop(backend_from_spec(&spec("1M")).unwrap());
    let error = backend_from_spec(&spec("2M")).err().unwrap().to_string();
    assert!(
        error.contains("has 1048576 bytes, the spec asks for 2097152"),
        "{error}"
    );
    assert!(error.contains("add ,grow"), "{error}");
    let error = backend_from_spec(&spec("512K")).err().unwrap().to_string();
    assert!(error.contains("never exports part of a file"), "{error}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        1 << 20,
        "untouched"
    );
    let grown = backend_from_spec(&format!("{},grow", spec("2M"))).unwrap();
    assert_eq!(grown.size_bytes(), 2 << 20);
    drop(grown);
    assert_eq!(
        backend_from_spec(&spec("2M")).unwrap().size_bytes(),
        2 << 20
    );
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(format!("{}.identity", path.display()));
}

#[test]
fn a_file_is_exported_once_unless_every_lun_says_shared() {
    let path = temp_path("locked.img");
    let spec = format!("file:{}:1M", path.display());
    let first = backend_from_spec(&spec).unwrap();
    let error = backend_from_spec(&spec).err().unwrap();
    assert!(matches!(error, BackendError::InUse { .. }), "{error}");
    assert!(error
        .to_string()
        .contains("in use by another LUN or gateway"));
    assert!(
        backend_from_spec(&format!("{spec},shared")).is_err(),
        "exclusive holder"
    );
    drop(first);
    let a = backend_from_spec(&format!("{spec},shared")).unwrap();
    let b = backend_from_spec(&format!("{spec},shared")).unwrap();
    assert!(backend_from_spec(&spec).is_err(), "shared holders");
    drop((a, b));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(format!("{}.identity", path.display()));
}

/// Issue 16: `buffered` keeps a file LUN off O_DIRECT (the pool's caching, for a like for
/// like comparison); other backends refuse it by name.
#[test]
fn buffered_file_luns_skip_direct_io_and_other_backends_refuse_it() {
    let dir = std::env::temp_dir().join(format!("gateway-buffered-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("f.img").display().to_string();
    let spec = LunSpec::parse(&format!("file:{path}:1M,buffered")).unwrap();
    assert!(spec.options.buffered);
    let options = crate::backend::file::FileOptions {
        buffered: true,
        ..Default::default()
    };
    let file =
        crate::backend::file::FileBackend::open_with(&path, Some(1 << 20), 512, options).unwrap();
    assert!(!file.direct_io(), "buffered means no O_DIRECT");
    drop(file);
    let e = LunSpec::parse("ram:1M,buffered").unwrap_err().to_string();
    assert!(
        e.contains("buffered") && e.contains("only file LUNs"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
