# The developer's entry points. The README's two commands are plain cargo; these add the rest.

default: check

# Formatting and lints, as CI runs them.
check:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Every test (unit and integration), as CI runs them.
test:
    cargo test

# The end-to-end tests with real parts: Chromium over WebDriver, Xvfb with an xterm, tmux.
e2e:
    cargo test --test it -- browser remote console

# All benchmarks, each beside its baseline from the same run; writes docs/benchmarks.md and .json.
bench:
    cargo bench --bench custos

# The load driver alone: 500 to 5,000 concurrent sessions over TLS WebSockets on loopback,
# relay and durable-ack latency percentiles and errors at each step (docs/benchmarks.md).
load:
    cargo bench --bench custos -- --load-only

# The benchmark harness in its short mode (what CI runs); writes target/bench-short.json only.
bench-short:
    cargo bench --bench custos -- --short

# The appliance image: a hybrid BIOS/UEFI ISO and a UEFI disk (raw, qcow2) with checksums and an
# SBOM, in target/image (docs/install.md). Needs the packages .ci/run installs for it.
image:
    cargo build --release --bin custos
    bash image/build.sh

# Boots the image under QEMU (TCG): first boot, setup on the serial console, reboot, UEFI disk.
image-test: image
    cargo test --release --test it image:: -- --nocapture

# The reliability gauntlet (docs/reliability.md): kill -9 at random moments during 50 recorded
# sessions, 100 times, each restart checked; a full disk; injected I/O errors. Needs root (a tmpfs
# of its own, strace attached to the server). CI runs it short (3 kills) with the other tests.
gauntlet rounds="100" sessions="50":
    CUSTOS_GAUNTLET_ROUNDS={{rounds}} CUSTOS_GAUNTLET_SESSIONS={{sessions}} CUSTOS_LOG=error cargo test --release --test it gauntlet:: -- --nocapture --test-threads=1

# Licenses, bans, sources, and advisories offline against the RustSec snapshot in ../shared
# (cargo install --locked cargo-deny).
deny:
    .ci/deny-db ../shared/advisory-db target/advisory-dbs
    CUSTOS_ADVISORY_DB_ROOT="$PWD/target/advisory-dbs" cargo deny --offline check

# The whole CI script, as CI runs it (installs system packages: run as root).
ci:
    bash .ci/run

# Run the appliance on its defaults (./custos-data, https://127.0.0.1:8443).
serve:
    cargo run --release -- serve

# The end user's client against a running appliance: just client CODE FINGERPRINT [SERVER]
client code fingerprint server="127.0.0.1:8443":
    cargo run --release --bin custos-client -- --server {{server}} --code {{code}} --fingerprint {{fingerprint}}

# Fuzz one target (needs the nightly toolchain and `cargo install cargo-fuzz`): screen_frame,
# archive_object, recording_records, session_message, policy_file, checkpoint_note, export_bundle.
fuzz target="screen_frame" seconds="60":
    cd fuzz && cargo +nightly fuzz run {{target}} -- -max_total_time={{seconds}}

# Every fuzz target for a while each (CI: a minute); a crash fails, and its input is kept in
# fuzz/artifacts/TARGET/ to become a regression test.
fuzz-ci seconds="60":
    bash fuzz/run-all {{seconds}}
