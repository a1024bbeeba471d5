// Command godwit-guest is Godwit's test guest program. It runs inside every test VM,
// normally as PID 1 (exec'd by the initramfs's /init); see package guest for what it
// does. Flags exist for running it elsewhere (tests, development); inside the VM all
// settings come from the kernel command line.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/godwit/godwit/internal/guest"
)

func main() {
	opt := guest.Options{}
	flag.StringVar(&opt.HTTPAddr, "http", guest.DefaultHTTPAddr, "HTTP listen address")
	flag.StringVar(&opt.EchoAddr, "echo", guest.DefaultEchoAddr, "TCP and UDP echo listen address")
	flag.StringVar(&opt.DiskPath, "disk", guest.DefaultDiskPath, "data disk (block device or file)")
	flag.StringVar(&opt.CmdlinePath, "cmdline", "/proc/cmdline", "file holding the kernel command line")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stdout, nil))
	opt.Log = log
	pid1 := os.Getpid() == 1
	opt.PowerOff = pid1

	ctx := context.Background()
	if pid1 {
		// PID 1 must never exit (the kernel would panic), so signals are only logged,
		// and orphaned processes are reaped.
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPWR)
		go func() {
			for s := range sigs {
				log.Warn("signal ignored by PID 1", "signal", s.String())
			}
		}()
		go guest.ReapChildren(ctx)
	} else {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
	}

	err := guest.Run(ctx, opt)
	if !pid1 {
		if err != nil {
			log.Error("godwit-guest failed", "err", err)
			os.Exit(1)
		}
		return
	}
	log.Error("godwit-guest stopped; PID 1 sleeps forever", "err", err)
	for {
		time.Sleep(time.Hour)
	}
}
