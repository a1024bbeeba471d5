// Package guest is Godwit's test guest: the program that runs inside every test VM
// (as PID 1, started by the initramfs's /init) and lets the host observe what a live
// migration did to the guest.
//
// # Boot
//
// The image built by scripts/build-guest.sh is Debian's cloud kernel plus an initramfs
// holding busybox, the virtio (and ACPI power-button) kernel modules and this program.
// /init mounts /proc, /sys and /dev, loads the modules in dependency order and execs the
// program, which then is PID 1: it reaps zombies, never exits (fatal errors are logged
// and it sleeps), and logs to stdout, which is the serial console (console=ttyS0).
//
// # Kernel command line
//
// All settings come from /proc/cmdline (see [ParseCmdline]):
//
//	godwit.ip=198.18.1.100/24   address of the first non-loopback interface; without it the
//	                            network is left alone (lo is still brought up)
//	godwit.gw=198.18.1.1        optional default gateway
//	godwit.hostname=NAME        optional hostname
//	godwit.static_mib=32        size of the static checked region (default 32, 0 = none)
//	godwit.check_mibps=64       checker speed limit in MiB/s (default 64, 0 = unlimited)
//	godwit.dirty_mib=N          start the memory dirtier at boot with N MiB ...
//	godwit.dirty_rate=R         ... at R MiB/s (0 or absent = as fast as possible)
//
// # Services
//
// HTTP on TCP port 80 ([DefaultHTTPAddr]):
//
//	GET    /healthz              200 "ok"
//	GET    /stats                JSON [Stats]
//	POST   /stats/reset          resets max_pause_ms; returns the stats taken just before
//	POST   /dirty?mib=N&rate=R   (re)starts the dirtier on N MiB at R MiB/s (R 0 = max speed);
//	                             returns the "dirty" JSON object; 507 if N MiB would not leave
//	                             48 MiB of the guest's memory free (the old run is stopped
//	                             either way)
//	POST   /dirty?mib=0          stops the dirtier and frees its memory (also DELETE /dirty)
//	POST   /poweroff             202, then the guest powers itself off (as init only; 409
//	                             otherwise): the guest's own shutdown, for tests of HA
//	PUT    /disk/{slot}          writes a disk record (slot 0..63, body <= DiskMaxBody, i.e.
//	                             1 MiB - 44 bytes; see [EncodeDiskRecord]) with O_DIRECT and
//	                             fdatasync before replying 200; 413 if too large
//	GET    /disk/{slot}          reads a record back bypassing the page cache: 200 + body,
//	                             409 + text when absent or corrupt, 503 without a disk
//
// Echo on port 7 ([DefaultEchoAddr]), TCP (every byte of every connection is sent back)
// and UDP (every datagram is returned verbatim to its sender).
//
// # Memory checking
//
// Memory is organised in 4 KiB pages grouped in 1 MiB chunks, each chunk with its own
// mutex and a generation number per page. Every 8-byte word of a page holds a value
// derived from the region's seed, the page index, the page's generation and the word
// index (see fillPage); generation 0 means "never written" and must read as zeros. The
// writer (the dirtier, or the one-time fill of the static region) and the checker both
// hold the chunk's mutex while touching a chunk, and the writer bumps the generation
// together with the data, so the checker can never see a half-written page: any
// mismatch is real memory corruption and counts in memory_errors (one per wrong word;
// the checker then restores the page, so a corruption is counted once, not every pass).
// The regions are anonymous mmap'd memory outside the Go heap and stay referenced for
// their lifetime, so every page is really written and read (the compiler cannot drop
// stores whose results the checker later reads); the dirtier's working set is unmapped
// when it stops. The checker runs at godwit.check_mibps (64 MiB/s by default, about 9%
// of a host core under TCG): after an event, wait for check_passes to grow by 2 to be
// sure every page was verified afterwards.
//
// # Pause meter
//
// A goroutine sleeps 1 ms in a loop and records the longest gap between consecutive
// wake-ups on the monotonic clock (max_pause_ms; it includes the 1 ms sleep itself and
// the scheduler's latency: measured on the 2-core TCG development host, an idle guest
// shows 5-20 ms over some seconds, so reset it with POST /stats/reset right before the
// event to measure, and compare against a run without migration). On every wake-up it
// also checks that neither the wall clock nor the monotonic clock went backwards
// (clock_backwards).
//
// # Power button
//
// QEMU's system_powerdown raises an ACPI power-button event. Debian's cloud kernel has
// the ACPI button driver (button.ko) and evdev (evdev.ko) as modules, which the
// initramfs loads; the button then appears as an input device ("Power Button") whose
// /dev/input/eventN reports KEY_POWER. [WatchPowerButton] reads every event device and,
// when running as PID 1, the program syncs and powers the machine off.
package guest
