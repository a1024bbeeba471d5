package guest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Options configure [Run]. The zero value of a field selects its default.
type Options struct {
	Log         *slog.Logger
	CmdlinePath string // default /proc/cmdline
	HTTPAddr    string // default DefaultHTTPAddr (":80")
	EchoAddr    string // default DefaultEchoAddr (":7"), TCP and UDP
	DiskPath    string // default DefaultDiskPath ("/dev/vda")
	// PowerOff makes a power-button press sync and power the machine off; otherwise a
	// press is only logged. Only PID 1 should set it.
	PowerOff bool
}

// Run is the whole guest: it reads the kernel command line, configures the network,
// starts the memory checker, the pause meter, the power-button watcher and the HTTP
// and echo servers, and runs until ctx is done or a server fails. A bad kernel command
// line is logged, not fatal.
func Run(ctx context.Context, opt Options) error {
	if opt.Log == nil {
		opt.Log = slog.New(slog.NewTextHandler(os.Stdout, nil))
	}
	log := opt.Log
	if opt.CmdlinePath == "" {
		opt.CmdlinePath = "/proc/cmdline"
	}
	if opt.HTTPAddr == "" {
		opt.HTTPAddr = DefaultHTTPAddr
	}
	if opt.EchoAddr == "" {
		opt.EchoAddr = DefaultEchoAddr
	}
	if opt.DiskPath == "" {
		opt.DiskPath = DefaultDiskPath
	}
	log.Info("godwit-guest starting", "version", Version, "pid", os.Getpid(), "kernel_uptime_s", kernelUptime())

	raw, err := os.ReadFile(opt.CmdlinePath)
	if err != nil {
		log.Error("cannot read the kernel command line; using defaults", "path", opt.CmdlinePath, "err", err)
	}
	cfg, err := ParseCmdline(string(raw))
	if err != nil {
		log.Error("bad kernel command line; ignoring the bad parameters", "err", err)
	}
	for _, u := range cfg.Unknown {
		log.Warn("unknown kernel command line parameter", "param", u)
	}
	if _, err := ConfigureNetwork(ctx, cfg, log); err != nil {
		log.Error("network configuration failed", "err", err)
	}

	mem, err := NewMemory(log, cfg.StaticMiB, cfg.CheckMiBps)
	if err != nil {
		return fmt.Errorf("guest: %w", err)
	}
	pause := NewPauseMeter(DefaultPauseInterval)
	disk := &Disk{Path: opt.DiskPath}
	srv := NewServer(log, mem, pause, disk, readBootID(), cfg)
	if opt.PowerOff {
		srv.PowerOff = func() {
			if err := PowerOff(log); err != nil {
				log.Error("power: cannot power off", "err", err)
			}
		}
	}

	httpLn, err := net.Listen("tcp", opt.HTTPAddr)
	if err != nil {
		return fmt.Errorf("guest: http listen on %s: %w", opt.HTTPAddr, err)
	}
	echoLn, err := net.Listen("tcp", opt.EchoAddr)
	if err != nil {
		httpLn.Close()
		return fmt.Errorf("guest: tcp echo listen on %s: %w", opt.EchoAddr, err)
	}
	echoPC, err := net.ListenPacket("udp", opt.EchoAddr)
	if err != nil {
		httpLn.Close()
		echoLn.Close()
		return fmt.Errorf("guest: udp echo listen on %s: %w", opt.EchoAddr, err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	goFn := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	goFn(func() { mem.Run(ctx) })
	goFn(func() { pause.Run(ctx) })
	goFn(func() {
		WatchPowerButton(ctx, log, func(dev string) {
			log.Info("power: power button pressed", "dev", dev)
			if !opt.PowerOff {
				log.Info("power: not PID 1, ignoring the power button")
				return
			}
			if err := PowerOff(log); err != nil {
				log.Error("power: cannot power off", "err", err)
			}
		})
	})
	goFn(func() { errc <- ServeTCPEcho(ctx, echoLn, log) })
	goFn(func() { errc <- ServeUDPEcho(ctx, echoPC, log) })
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	goFn(func() {
		err := hs.Serve(httpLn)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	})
	stopHTTP := context.AfterFunc(ctx, func() { hs.Close() })
	defer stopHTTP()
	log.Info("godwit-guest ready", "http", httpLn.Addr().String(), "echo", echoLn.Addr().String(),
		"boot_id", srv.BootID, "static_mib", cfg.StaticMiB, "check_mibps", cfg.CheckMiBps)

	if cfg.DirtyMiB > 0 {
		if err := mem.StartDirty(cfg.DirtyMiB, cfg.DirtyMiBps); err != nil {
			log.Error("dirty: cannot start from the kernel command line", "err", err)
		}
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		if runErr == nil {
			runErr = errors.New("guest: a server stopped unexpectedly")
		}
	}
	cancel()
	hs.Close()
	wg.Wait()
	return runErr
}

// kernelUptime returns the first field of /proc/uptime (seconds since boot), or "?".
func kernelUptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// readBootID returns the kernel's random per-boot id, or a random one if unavailable.
func readBootID() string {
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id
		}
	}
	return fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64())
}

// ReapChildren waits for every child process that exits (as PID 1 must, since orphans
// are re-parented to it) until ctx is done.
func ReapChildren(ctx context.Context) {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, syscall.SIGCHLD)
	defer signal.Stop(ch)
	for {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}
