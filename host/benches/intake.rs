//! Criterion benchmarks of intake's hot paths, each in a group with its
//! baseline so that criterion's report shows them side by side:
//!
//! - `invocation`: `Runtime::fetch` of a plugin returning an empty page (the
//!   trivial `noop` plugin and the `hostile` one, which has HTTP), the
//!   bare-wasmtime floor of the same components, and a process per fetch;
//! - `secret`: a granted request through the broker and a raw redb get +
//!   AES-256-GCM decrypt;
//! - `record_path`: one 1 MiB page of 1 KiB records through `Runtime::fetch`;
//! - `start`: loading 10 plugins from the compile cache.
//!
//! `cargo bench --bench intake [FILTER]`. The whole-system figures
//! (scheduler throughput, durable writes) are in `report.rs`, which prints
//! the table of `docs/benchmarks.md`.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use support::{
    CountingSink, Floor, Home, PluginEntry, RawSecrets, SecretFixture, distinct_plugins, guest,
    hostile_config, process_cat, process_true,
};

fn invocation(c: &mut Criterion) {
    let home = Home::new(&[PluginEntry::noop(), PluginEntry::hostile()], 16);
    let noop = home
        .add_sources("noop", 1, 1, &[])
        .pop()
        .expect("a data source");
    let hostile = home
        .add_sources("hostile", 1, 1, &hostile_config("empty"))
        .pop()
        .expect("a data source");
    let runtime = home.runtime(true);
    let floor = Floor::new(&guest("noop"), Vec::new(), true);
    let floor_http = Floor::new(&guest("hostile"), hostile_config("empty"), true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");

    let mut group = c.benchmark_group("invocation");
    for (name, source) in [("intake_noop", &noop), ("intake_http_plugin", &hostile)] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let mut sink = CountingSink::default();
                runtime
                    .fetch(source, None, &mut sink)
                    .await
                    .expect("the fetch succeeds");
            });
        });
    }
    for (name, floor) in [("floor_noop", &floor), ("floor_http_plugin", &floor_http)] {
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(floor.fetch().await) });
        });
    }
    group.sample_size(20);
    group.bench_function("process_bin_true", |b| b.iter(process_true));
    group.bench_function("process_cat_pipes", |b| b.iter(process_cat));
    group.finish();
}

fn secret(c: &mut Criterion) {
    let home = Home::new(&[PluginEntry::hostile()], 16);
    let fixture = SecretFixture::new(&home);
    let raw = RawSecrets::new();
    let mut group = c.benchmark_group("secret");
    group.bench_function("broker_request_granted", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                black_box(fixture.request());
            }
            let took = start.elapsed();
            // The runtime flushes audit records after every invocation; here
            // once per batch, outside the timing.
            fixture.broker.flush().expect("flush the audit records");
            took
        });
    });
    let mut id = 0;
    group.bench_function("raw_redb_get_aes_gcm", |b| {
        b.iter(|| {
            id += 7;
            black_box(raw.read(id))
        });
    });
    group.finish();
}

fn record_path(c: &mut Criterion) {
    let home = Home::new(&[PluginEntry::hostile()], 16);
    let source = home
        .add_sources("hostile", 1, 1, &hostile_config("bulk"))
        .pop()
        .expect("a data source");
    let runtime = home.runtime(true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // The last page of a `bulk` run: one fetch of one 1 MiB page.
    let cursor = Some("63".to_owned());
    let mut group = c.benchmark_group("record_path");
    group.throughput(Throughput::Bytes(1 << 20));
    group.sample_size(30);
    group.bench_function("runtime_fetch_1mib_page", |b| {
        b.to_async(&rt).iter(|| async {
            let mut sink = CountingSink::default();
            runtime
                .fetch(&source, cursor.clone(), &mut sink)
                .await
                .expect("the fetch succeeds");
            assert_eq!(sink.bytes, 1 << 20);
        });
    });
    group.finish();
}

fn start(c: &mut Criterion) {
    let dir = support::scratch();
    let home = Home::new(&distinct_plugins(dir.path(), 10), 16);
    drop(home.runtime(true)); // fills the compile cache
    let mut group = c.benchmark_group("start");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("warm_10_plugins", |b| b.iter(|| home.runtime(true)));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = invocation, secret, record_path, start
}
criterion_main!(benches);
