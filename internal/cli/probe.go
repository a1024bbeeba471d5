package cli

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/probe"
)

// newProbeCmd is the client side of the test guest, meant to run in a lab's client
// namespace: `godwit lab exec client -- godwit probe http http://IP/healthz --wait 60s`.
func newProbeCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "probe", Short: "Talk to a test guest: HTTP, TCP echo, UDP echo (run it in the lab's client namespace)"}
	var wait time.Duration
	httpCmd := &cobra.Command{
		Use: "http URL", Short: "GET a URL and print the body; with --wait, poll until it answers", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if wait > 0 {
				wctx, cancel := context.WithTimeout(ctx, wait)
				d, err := probe.WaitHTTP(wctx, args[0], 100*time.Millisecond)
				cancel()
				if err != nil {
					return err
				}
				fmt.Fprintf(e.errOut, "%s answered after %s\n", args[0], d.Round(time.Millisecond))
			}
			gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			b, err := probe.Get(gctx, args[0])
			if err != nil {
				return err
			}
			_, err = e.out.Write(b)
			return err
		},
	}
	httpCmd.Flags().DurationVar(&wait, "wait", 0, "poll until the URL answers 200, at most this long")
	var size int
	tcpCmd := &cobra.Command{
		Use: "tcp HOST:PORT", Short: "Send random bytes to a TCP echo server and check they come back", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			d, err := probe.EchoTCP(ctx, args[0], size)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.out, "TCP echo %s: %d bytes back intact in %s\n", args[0], size, d.Round(time.Microsecond))
			return nil
		},
	}
	tcpCmd.Flags().IntVar(&size, "bytes", 64<<10, "how many bytes to send")
	var count int
	udpCmd := &cobra.Command{
		Use: "udp HOST:PORT", Short: "Send datagrams to a UDP echo server and count those that come back", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 60*time.Second)
			defer cancel()
			got, err := probe.EchoUDP(ctx, args[0], count, time.Second)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.out, "UDP echo %s: %d of %d datagrams came back\n", args[0], got, count)
			if got < count {
				return fmt.Errorf("%d datagrams were lost", count-got)
			}
			return nil
		},
	}
	udpCmd.Flags().IntVar(&count, "count", 10, "how many datagrams to send")
	var interval, duration, timeout time.Duration
	streamCtx := func(ctx context.Context) (context.Context, context.CancelFunc) {
		if duration > 0 {
			return context.WithTimeout(ctx, duration)
		}
		return context.WithCancel(ctx)
	}
	udpStream := &cobra.Command{
		Use:   "udp-stream HOST:PORT",
		Short: "Send a UDP echo request every --interval until interrupted (or --duration) and report the longest gap without replies",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := streamCtx(cmd.Context())
			defer cancel()
			conn, err := net.Dial("udp", args[0])
			if err != nil {
				return fmt.Errorf("UDP stream to %s: %w", args[0], err)
			}
			defer conn.Close()
			res, err := probe.UDPStream(ctx, conn, interval)
			if err != nil {
				return err
			}
			if e.output == "json" {
				return printJSON(e.out, res)
			}
			fmt.Fprintf(e.out, "UDP stream %s: %d sent, %d answered, longest gap without replies %.1f ms\n",
				args[0], res.Sent, res.Received, float64(res.MaxGap)/float64(time.Millisecond))
			return nil
		},
	}
	udpStream.Flags().DurationVar(&interval, "interval", time.Millisecond, "time between requests")
	udpStream.Flags().DurationVar(&duration, "duration", 0, "stop after this long (default: when interrupted)")
	httpStream := &cobra.Command{
		Use:   "http-stream URL",
		Short: "GET a URL every --interval until interrupted (or --duration) and count failed requests",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := streamCtx(cmd.Context())
			defer cancel()
			res := probe.HTTPStream(ctx, args[0], interval, timeout)
			if e.output == "json" {
				return printJSON(e.out, res)
			}
			fmt.Fprintf(e.out, "HTTP stream %s: %d requests, %d failed, slowest %.0f ms\n",
				args[0], res.Requests, res.Failed, float64(res.Slowest)/float64(time.Millisecond))
			if res.Failed > 0 {
				return fmt.Errorf("%d of %d requests failed; the first: %s", res.Failed, res.Requests, res.FirstError)
			}
			return nil
		},
	}
	httpStream.Flags().DurationVar(&interval, "interval", 20*time.Millisecond, "time between requests")
	httpStream.Flags().DurationVar(&duration, "duration", 0, "stop after this long (default: when interrupted)")
	httpStream.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "a request without an answer this long has failed")
	cmd.AddCommand(httpCmd, tcpCmd, udpCmd, udpStream, httpStream)
	return cmd
}
