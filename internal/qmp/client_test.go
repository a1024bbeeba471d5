package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestDialQueryStatus(t *testing.T) {
	q := startQEMU(t, "-machine", "none", "-S")
	m := dial(t, q)

	if v := m.Version(); v.QEMU.Major == 0 {
		t.Errorf("greeting version not kept: %+v", v)
	}
	st, err := m.QueryStatus(tctx(t, 5*time.Second))
	if err != nil {
		t.Fatalf("QueryStatus: %v", err)
	}
	if st.Running || st.Status != StatusPrelaunch {
		t.Errorf("QueryStatus = %+v, want prelaunch and not running", st)
	}
	v, err := m.QueryVersion(tctx(t, 5*time.Second))
	if err != nil {
		t.Fatalf("QueryVersion: %v", err)
	}
	if v != m.Version() {
		t.Errorf("QueryVersion = %+v, greeting said %+v", v, m.Version())
	}
	t.Logf("QEMU %s (%s)", v, v.Package)
}

func TestStopCont(t *testing.T) {
	q := startQEMU(t, "-machine", "q35", "-accel", "tcg", "-m", "64", "-S")
	m := dial(t, q)
	ctx := tctx(t, 10*time.Second)

	if err := m.Cont(ctx); err != nil {
		t.Fatalf("Cont: %v", err)
	}
	waitEvent(t, m, EventResume, 5*time.Second)
	st, err := m.QueryStatus(ctx)
	if err != nil {
		t.Fatalf("QueryStatus: %v", err)
	}
	if !st.Running || st.Status != StatusRunning {
		t.Errorf("after Cont: %+v, want running", st)
	}

	if err := m.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	ev := waitEvent(t, m, EventStop, 5*time.Second)
	if ev.Timestamp.IsZero() || time.Since(ev.Timestamp) > time.Minute {
		t.Errorf("STOP event timestamp %v not parsed", ev.Timestamp)
	}
	st, err = m.QueryStatus(ctx)
	if err != nil {
		t.Fatalf("QueryStatus: %v", err)
	}
	if st.Running || st.Status != StatusPaused {
		t.Errorf("after Stop: %+v, want paused", st)
	}

	if err := m.SystemReset(ctx); err != nil {
		t.Errorf("SystemReset: %v", err)
	}
	if err := m.SystemPowerdown(ctx); err != nil {
		t.Errorf("SystemPowerdown: %v", err)
	}
}

func TestErrorReply(t *testing.T) {
	q := startQEMU(t, "-machine", "none", "-S")
	m := dial(t, q)
	ctx := tctx(t, 5*time.Second)

	err := m.Execute(ctx, "no-such-command", nil, nil)
	var qe *Error
	if !errors.As(err, &qe) {
		t.Fatalf("unknown command: got %T %v, want *qmp.Error", err, err)
	}
	if qe.Class != ClassCommandNotFound || !IsClass(err, ClassCommandNotFound) {
		t.Errorf("class = %q, want CommandNotFound", qe.Class)
	}
	if want := "The command no-such-command has not been found"; qe.Desc != want || !strings.Contains(err.Error(), want) {
		t.Errorf("desc = %q / Error() = %q, want QEMU's text %q", qe.Desc, err.Error(), want)
	}

	err = m.BlockdevDel(ctx, "nonexistent")
	if !IsClass(err, ClassGenericError) || !strings.Contains(err.Error(), "nonexistent") {
		t.Errorf("BlockdevDel(nonexistent) = %v, want GenericError naming the node", err)
	}

	// The connection stays usable after errors.
	if _, err := m.QueryStatus(ctx); err != nil {
		t.Errorf("QueryStatus after errors: %v", err)
	}
}

func TestConcurrentExecute(t *testing.T) {
	q := startQEMU(t, "-machine", "none", "-S")
	m := dial(t, q)
	ctx := tctx(t, 20*time.Second)

	const workers = 16
	const rounds = 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				switch (w + i) % 3 {
				case 0:
					st, err := m.QueryStatus(ctx)
					if err != nil || st.Status != StatusPrelaunch {
						errs <- fmt.Errorf("worker %d: QueryStatus = %+v, %v", w, st, err)
						return
					}
				case 1:
					v, err := m.QueryVersion(ctx)
					if err != nil || v.QEMU.Major == 0 {
						errs <- fmt.Errorf("worker %d: QueryVersion = %+v, %v", w, v, err)
						return
					}
				case 2:
					err := m.Execute(ctx, fmt.Sprintf("bogus-%d-%d", w, i), nil, nil)
					var qe *Error
					if !errors.As(err, &qe) || !strings.Contains(qe.Desc, fmt.Sprintf("bogus-%d-%d", w, i)) {
						errs <- fmt.Errorf("worker %d: reply for another call: %v", w, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestExecuteContextTimeout(t *testing.T) {
	q := startQEMU(t, "-machine", "none", "-S")
	m := dial(t, q)

	// A frozen QEMU never answers: the call must give up at its deadline.
	if err := q.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err := m.QueryStatus(ctx)
	cancel()
	elapsed := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("QueryStatus on frozen QEMU = %v, want deadline exceeded", err)
	}
	if elapsed > time.Second {
		t.Errorf("timeout took %v", elapsed)
	}

	// Cancellation works too.
	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Execute(ctx, "query-status", nil, nil) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled call = %v, want context.Canceled", err)
		}
	case <-time.After(time.Second):
		t.Fatal("cancelled call did not return")
	}

	// Once QEMU resumes, the late replies are discarded and new calls get
	// their own replies.
	if err := q.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	var kvm KVMInfo
	if err := m.Execute(tctx(t, 5*time.Second), "query-kvm", nil, &kvm); err != nil {
		t.Fatalf("query-kvm after resume: %v", err)
	}
	if kvm.Enabled {
		t.Errorf("query-kvm on -machine none = %+v", kvm)
	}
}

func TestDialTimeout(t *testing.T) {
	q := startQEMU(t, "-machine", "none", "-S")
	m := dial(t, q)
	_ = m

	// QEMU serves one QMP client at a time: a second Dial gets no greeting.
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	m2, err := Dial(ctx, q.socket)
	if err == nil {
		m2.Close()
		t.Fatal("second Dial succeeded while the first is connected")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second Dial = %v, want deadline exceeded", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("Dial ignored its deadline: %v", time.Since(start))
	}

	if _, err := Dial(tctx(t, time.Second), q.dir+"/nonexistent.sock"); err == nil {
		t.Error("Dial to a missing socket succeeded")
	}
}

func TestQuitClosesMonitor(t *testing.T) {
	q := startQEMU(t, "-machine", "none", "-S")
	m := dial(t, q)

	if err := m.Quit(tctx(t, 5*time.Second)); err != nil {
		t.Fatalf("Quit: %v", err)
	}
	select {
	case <-m.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after quit")
	}
	_, err := m.QueryStatus(tctx(t, 5*time.Second))
	if !isClosed(err) || !strings.Contains(err.Error(), "monitor connection to QEMU closed") {
		t.Errorf("call after quit = %v, want the connection-closed error", err)
	}
	if !isClosed(m.Err()) {
		t.Errorf("Err() = %v", m.Err())
	}
	// The event channel is closed after the SHUTDOWN event.
	var names []string
	for ev := range m.Events() {
		names = append(names, ev.Name)
		if ev.Name == EventShutdown {
			var d ShutdownEventData
			if err := ev.Decode(&d); err != nil || d.Reason != "host-qmp-quit" {
				t.Errorf("SHUTDOWN data = %+v, %v", d, err)
			}
		}
	}
	if len(names) == 0 || names[len(names)-1] != EventShutdown {
		t.Errorf("events = %v, want ending with SHUTDOWN", names)
	}
}

func TestPendingCallsFailWhenQEMUDies(t *testing.T) {
	q := startQEMU(t, "-machine", "none", "-S")
	m := dial(t, q)

	if err := q.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	const n = 4
	results := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := m.QueryStatus(tctx(t, 10*time.Second))
			results <- err
		}()
	}
	time.Sleep(100 * time.Millisecond) // let the calls be sent
	if err := q.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		select {
		case err := <-results:
			if !isClosed(err) || !strings.Contains(err.Error(), "monitor connection to QEMU closed") {
				t.Errorf("pending call = %v, want the connection-closed error", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("pending call did not fail when QEMU died")
		}
	}
	select {
	case <-m.Done():
	case <-time.After(time.Second):
		t.Error("Done not closed")
	}
}

func TestEventsDropOldest(t *testing.T) {
	m := &Monitor{events: make(chan Event, eventBufferSize)}
	total := eventBufferSize + 44
	for i := 0; i < total; i++ {
		m.deliverEvent(message{Event: "E", Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))})
	}
	if got := m.DroppedEvents(); got != 44 {
		t.Errorf("dropped = %d, want 44", got)
	}
	first := <-m.Events()
	var d struct{ N int }
	if err := first.Decode(&d); err != nil || d.N != 44 {
		t.Errorf("oldest kept event = %s (%v), want n=44", first.Data, err)
	}
	if len(m.events) != eventBufferSize-1 {
		t.Errorf("buffered = %d", len(m.events))
	}
}

// TestExecuteOOB: the client enables out-of-band execution when QEMU offers it,
// so that migrate-pause and migrate-recover reach a QEMU whose main loop is
// blocked (a post-copy destination waiting for a page).
func TestExecuteOOB(t *testing.T) {
	q := startQEMU(t, "-machine", "none", "-S")
	m := dial(t, q)
	ctx := tctx(t, 10*time.Second)
	if !slices.Contains(m.Capabilities(), "oob") {
		t.Fatalf("QEMU offers %v; the QMP socket should offer oob", m.Capabilities())
	}
	// QEMU answers out of band: the command reached it as exec-oob.
	err := m.ExecuteOOB(ctx, "query-status", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "does not support OOB") {
		t.Errorf("query-status out of band: %v; want QEMU's refusal of a command not allowed out of band", err)
	}
	if err := m.MigratePause(ctx); err == nil || !strings.Contains(err.Error(), "postcopy") {
		t.Errorf("migrate-pause without a migration: %v; want QEMU's refusal naming post-copy", err)
	}
	// In-band commands still work, with out-of-band enabled.
	if st, err := m.QueryStatus(ctx); err != nil || st.Status != "prelaunch" {
		t.Errorf("QueryStatus = %+v, %v", st, err)
	}
}
