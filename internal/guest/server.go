package guest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// DefaultHTTPAddr is where the HTTP server listens.
const DefaultHTTPAddr = ":80"

// Version identifies the guest build; scripts/build-guest.sh sets it with -ldflags -X.
var Version = "dev"

// Stats is the JSON document served at GET /stats.
type Stats struct {
	BootID         string     `json:"boot_id"`          // random per boot
	Version        string     `json:"version"`          // guest build (hash of its sources)
	Hostname       string     `json:"hostname"`         // current hostname
	IP             string     `json:"ip"`               // address from godwit.ip, without prefix ("" if none)
	IPCIDR         string     `json:"ip_cidr"`          // godwit.ip as given
	UptimeMS       int64      `json:"uptime_ms"`        // since the guest program started
	MemoryErrors   uint64     `json:"memory_errors"`    // wrong 8-byte words found by the checker
	MemoryBadPages uint64     `json:"memory_bad_pages"` // pages with at least one wrong word
	CheckedBytes   uint64     `json:"checked_bytes"`    // bytes verified by the checker
	CheckPasses    uint64     `json:"check_passes"`     // complete passes of the checker
	StaticMiB      int        `json:"static_mib"`       // size of the static checked region
	MaxPauseMS     float64    `json:"max_pause_ms"`     // longest gap between 1 ms wake-ups since reset
	MaxPauseAtMS   int64      `json:"max_pause_at_ms"`  // uptime at which that gap ended
	PauseSamples   uint64     `json:"pause_samples"`    // wake-ups of the pause meter
	ClockBackwards uint64     `json:"clock_backwards"`  // wall_backwards + mono_backwards
	WallBackwards  uint64     `json:"wall_backwards"`   // wake-ups where the wall clock went back
	MonoBackwards  uint64     `json:"mono_backwards"`   // wake-ups where the monotonic clock went back
	Dirty          DirtyStats `json:"dirty"`            // the memory dirtier
	DiskPresent    bool       `json:"disk_present"`     // whether the data disk exists
	Clocksource    string     `json:"clocksource"`      // the kernel's current clocksource
}

// Server serves the guest's HTTP API; see the package documentation.
type Server struct {
	Log    *slog.Logger
	Memory *Memory
	Pause  *PauseMeter
	Disk   *Disk
	BootID string
	Config Config
	// PowerOff, when set, powers the guest off (POST /poweroff): the guest's own
	// shutdown, as a user inside it would do.
	PowerOff func()
	start    time.Time
}

// NewServer returns a server; its uptime counts from now.
func NewServer(log *slog.Logger, mem *Memory, pause *PauseMeter, disk *Disk, bootID string, cfg Config) *Server {
	return &Server{Log: log, Memory: mem, Pause: pause, Disk: disk, BootID: bootID, Config: cfg, start: time.Now()}
}

// Handler returns the HTTP routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.Stats(s.Pause.Stats()))
	})
	mux.HandleFunc("POST /stats/reset", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.Stats(s.Pause.ResetMax()))
	})
	mux.HandleFunc("POST /dirty", s.handleDirty)
	mux.HandleFunc("DELETE /dirty", func(w http.ResponseWriter, r *http.Request) {
		s.Memory.StopDirty()
		writeJSON(w, s.Memory.Stats().Dirty)
	})
	mux.HandleFunc("POST /poweroff", func(w http.ResponseWriter, r *http.Request) {
		if s.PowerOff == nil {
			http.Error(w, "this guest program does not run as the guest's init, so it cannot power the guest off", http.StatusConflict)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, "powering off\n")
		// Answer first, then power off.
		time.AfterFunc(100*time.Millisecond, s.PowerOff)
	})
	mux.HandleFunc("PUT /disk/{slot}", s.handleDiskPut)
	mux.HandleFunc("GET /disk/{slot}", s.handleDiskGet)
	return mux
}

// Stats assembles the /stats document with the given pause figures.
func (s *Server) Stats(p PauseStats) Stats {
	m := s.Memory.Stats()
	host, _ := os.Hostname()
	st := Stats{
		BootID:         s.BootID,
		Version:        Version,
		Hostname:       host,
		UptimeMS:       time.Since(s.start).Milliseconds(),
		MemoryErrors:   m.Errors,
		MemoryBadPages: m.BadPages,
		CheckedBytes:   m.CheckedBytes,
		CheckPasses:    m.CheckPasses,
		StaticMiB:      m.StaticMiB,
		MaxPauseMS:     float64(p.MaxPause) / float64(time.Millisecond),
		MaxPauseAtMS:   p.MaxPauseAt.Milliseconds(),
		PauseSamples:   p.Samples,
		ClockBackwards: p.WallBackwards + p.MonoBackwards,
		WallBackwards:  p.WallBackwards,
		MonoBackwards:  p.MonoBackwards,
		Dirty:          m.Dirty,
		DiskPresent:    s.Disk != nil && s.Disk.Present(),
		Clocksource:    clocksource(),
	}
	if s.Config.IP.IsValid() {
		st.IP = s.Config.IP.Addr().String()
		st.IPCIDR = s.Config.IP.String()
	}
	return st
}

func (s *Server) handleDirty(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	mib, err := parseMiB(q.Get("mib"))
	if err != nil {
		http.Error(w, fmt.Sprintf("dirty: mib=%q: %v", q.Get("mib"), err), http.StatusBadRequest)
		return
	}
	rate := 0.0
	if v := q.Get("rate"); v != "" {
		if rate, err = parseRate(v); err != nil {
			http.Error(w, fmt.Sprintf("dirty: rate=%q: %v", v, err), http.StatusBadRequest)
			return
		}
	}
	if err := s.Memory.StartDirty(mib, rate); err != nil {
		s.Log.Error("dirty: start failed", "err", err)
		code := http.StatusInternalServerError
		if errors.Is(err, ErrNoMemory) {
			code = http.StatusInsufficientStorage
		}
		http.Error(w, err.Error(), code)
		return
	}
	writeJSON(w, s.Memory.Stats().Dirty)
}

func (s *Server) diskSlot(w http.ResponseWriter, r *http.Request) (int, bool) {
	slot, err := strconv.Atoi(r.PathValue("slot"))
	if err != nil || slot < 0 || slot >= DiskSlots {
		http.Error(w, fmt.Sprintf("disk: slot %q: must be an integer 0..%d", r.PathValue("slot"), DiskSlots-1), http.StatusBadRequest)
		return 0, false
	}
	if s.Disk == nil || !s.Disk.Present() {
		http.Error(w, "disk: no data disk in this VM", http.StatusServiceUnavailable)
		return 0, false
	}
	return slot, true
}

func (s *Server) handleDiskPut(w http.ResponseWriter, r *http.Request) {
	slot, ok := s.diskSlot(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, DiskMaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("disk: body larger than %d bytes", DiskMaxBody), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, fmt.Sprintf("disk: reading request body: %v", err), http.StatusBadRequest)
		return
	}
	if err := s.Disk.Write(slot, body); err != nil {
		s.Log.Error("disk: write failed", "slot", slot, "err", err)
		code := http.StatusInternalServerError
		if errors.Is(err, ErrDiskTooSmall) {
			code = http.StatusInsufficientStorage
		}
		http.Error(w, err.Error(), code)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "wrote %d bytes to slot %d\n", len(body), slot)
}

func (s *Server) handleDiskGet(w http.ResponseWriter, r *http.Request) {
	slot, ok := s.diskSlot(w, r)
	if !ok {
		return
	}
	body, err := s.Disk.Read(slot)
	switch {
	case errors.Is(err, ErrNoRecord) || errors.Is(err, ErrCorruptRecord):
		http.Error(w, err.Error(), http.StatusConflict)
		return
	case err != nil:
		s.Log.Error("disk: read failed", "slot", slot, "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

// clocksource returns the kernel's current clocksource (e.g. "tsc"), or "".
func clocksource() string {
	b, err := os.ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
