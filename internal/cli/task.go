package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/godwit/godwit/internal/api"
)

// errWatchDone ends the reading of the task stream once the task watched has ended.
var errWatchDone = errors.New("the task watched has ended")

func newTaskCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "task", Short: "List, show, watch and cancel tasks (VM create, start, stop, delete, migrate)"}
	var state, kind, target string
	list := &cobra.Command{
		Use: "list", Short: "List tasks, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"state": state, "kind": kind, "target": target} {
				if v != "" {
					q.Set(k, v)
				}
			}
			var ts []api.Task
			if err := c.Do(cmd.Context(), http.MethodGet, "/api/v1/tasks?"+q.Encode(), nil, &ts); err != nil {
				return fmt.Errorf("list tasks: %w", err)
			}
			if e.output == "json" {
				return printJSON(e.out, ts)
			}
			t := newTable("ID", "KIND", "TARGET", "STATE", "PROGRESS", "INITIATOR", "QUEUED", "DURATION", "ERROR")
			for _, tk := range ts {
				t.row(tk.ID, tk.Kind, tk.Target, tk.State, progressText(tk), orDash(tk.Initiator),
					tk.Queued.UTC().Format(time.RFC3339), taskDuration(tk), shorten(tk.Error, 60))
			}
			return t.print(e.out)
		},
	}
	list.Flags().StringVar(&state, "state", "", "only tasks in this state (queued, running, succeeded, failed, cancelled)")
	list.Flags().StringVar(&kind, "kind", "", "only tasks of this kind (vm.create, vm.start, vm.stop, vm.delete, vm.migrate)")
	list.Flags().StringVar(&target, "target", "", "only tasks on this target (a VM's name)")
	show := &cobra.Command{
		Use: "show ID", Short: "Show one task", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var t api.Task
			if err := c.Do(cmd.Context(), http.MethodGet, "/api/v1/tasks/"+url.PathEscape(args[0]), nil, &t); err != nil {
				return fmt.Errorf("show task %s: %w", args[0], err)
			}
			if e.output == "json" {
				return printJSON(e.out, t)
			}
			printTask(e, t)
			return nil
		},
	}
	watch := &cobra.Command{
		Use:   "watch [ID]",
		Short: "Follow one task with a progress bar until it ends, or every task change",
		Long: `With an ID, follow that task and draw its progress until it ends; a failed or
cancelled task makes the command fail. Without one, print every change of every task
until interrupted. -o json prints each change as one JSON line.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			if len(args) == 1 {
				return e.watchTask(cmd.Context(), c, args[0])
			}
			return e.watchAllTasks(cmd.Context(), c)
		},
	}
	cancel := &cobra.Command{
		Use: "cancel ID", Short: "Cancel a running task (a migration: the VM stays on its source host)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var t api.Task
			if err := c.Do(cmd.Context(), http.MethodPost, "/api/v1/tasks/"+url.PathEscape(args[0])+"/cancel", nil, &t); err != nil {
				return fmt.Errorf("cancel task %s: %w", args[0], err)
			}
			if e.output == "json" {
				return printJSON(e.out, t)
			}
			fmt.Fprintf(e.out, "cancelling task %s (%s of %s); `godwit task watch %s` follows it to its end\n", t.ID, t.Kind, t.Target, t.ID)
			return nil
		},
	}
	cmd.AddCommand(list, show, watch, cancel)
	return cmd
}

// watchTask follows one task on the center's task stream until it ends, drawing its
// progress. A task that did not succeed is an error.
func (e *env) watchTask(ctx context.Context, c *api.Client, id string) error {
	resp, err := c.Stream(ctx, "/api/v1/tasks/stream?id="+url.QueryEscape(id))
	if err != nil {
		return fmt.Errorf("watch task %s: %w", id, err)
	}
	defer resp.Body.Close()
	tty := false
	if f, ok := e.out.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	var last api.Task
	lastLine := ""
	err = api.ReadEvents(resp.Body, func(data []byte) error {
		if err := json.Unmarshal(data, &last); err != nil {
			return fmt.Errorf("decode a task update: %w", err)
		}
		if e.output == "json" {
			b, _ := json.Marshal(last)
			fmt.Fprintf(e.out, "%s\n", b)
		} else if line := progressBar(last); line != lastLine {
			if tty {
				fmt.Fprintf(e.out, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(e.out, line)
			}
			lastLine = line
		}
		if api.TaskEnded(last.State) {
			return errWatchDone
		}
		return nil
	})
	if tty && e.output != "json" {
		fmt.Fprintln(e.out)
	}
	switch {
	case errors.Is(err, errWatchDone):
	case ctx.Err() != nil:
		fmt.Fprintf(e.errOut, "stopped watching; task %s goes on\n", id)
		return ctx.Err()
	case err != nil:
		return fmt.Errorf("watch task %s: %w", id, err)
	default:
		return fmt.Errorf("watch task %s: the center ended the stream before the task ended; run the command again", id)
	}
	if e.output != "json" {
		printTask(e, last)
	}
	if last.State != api.TaskSucceeded {
		return fmt.Errorf("task %s (%s of %s) %s: %s", last.ID, last.Kind, last.Target, last.State, last.Error)
	}
	return nil
}

// watchAllTasks prints every task change until ctx ends.
func (e *env) watchAllTasks(ctx context.Context, c *api.Client) error {
	resp, err := c.Stream(ctx, "/api/v1/tasks/stream")
	if err != nil {
		return fmt.Errorf("watch tasks: %w", err)
	}
	defer resp.Body.Close()
	err = api.ReadEvents(resp.Body, func(data []byte) error {
		var t api.Task
		if err := json.Unmarshal(data, &t); err != nil {
			return fmt.Errorf("decode a task update: %w", err)
		}
		if e.output == "json" {
			b, _ := json.Marshal(t)
			fmt.Fprintf(e.out, "%s\n", b)
			return nil
		}
		line := fmt.Sprintf("%s  %-8s  %-10s  %-12s  %s", time.Now().UTC().Format("15:04:05.000"), t.ID, t.Kind, t.Target, progressBar(t))
		if t.Error != "" {
			line += "  " + t.Error
		}
		fmt.Fprintln(e.out, line)
		return nil
	})
	if ctx.Err() != nil {
		return nil // interrupted: the normal way to stop
	}
	if err != nil {
		return fmt.Errorf("watch tasks: %w", err)
	}
	return errors.New("watch tasks: the center ended the stream (did it stop?); run the command again")
}

// progressBar draws a task's progress: "[##########----------]  50% precopy  running".
func progressBar(t api.Task) string {
	const width = 20
	pct := min(max(t.Progress.Percent, 0), 100)
	n := int(pct / 100 * width)
	bar := "[" + strings.Repeat("#", n) + strings.Repeat("-", width-n) + "]"
	s := fmt.Sprintf("%s %3.0f%%", bar, pct)
	if t.Progress.Phase != "" {
		s += " " + t.Progress.Phase
	}
	return s + "  " + t.State
}

func progressText(t api.Task) string {
	if t.Progress.Phase != "" && !api.TaskEnded(t.State) {
		return fmt.Sprintf("%.0f%% %s", t.Progress.Percent, t.Progress.Phase)
	}
	return fmt.Sprintf("%.0f%%", t.Progress.Percent)
}

func taskDuration(t api.Task) string {
	if t.Started == nil {
		return "-"
	}
	end := time.Now()
	if t.Finished != nil {
		end = *t.Finished
	}
	return end.Sub(*t.Started).Round(time.Millisecond).String()
}

func shorten(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

func printTask(e *env, t api.Task) {
	pairs := []string{"Task", t.ID, "Kind", t.Kind, "Target", t.Target, "Initiator", orDash(t.Initiator),
		"State", t.State, "Progress", progressBar(t), "Queued", t.Queued.UTC().Format(time.RFC3339Nano)}
	if t.Started != nil {
		pairs = append(pairs, "Started", t.Started.UTC().Format(time.RFC3339Nano))
	}
	if t.Finished != nil {
		pairs = append(pairs, "Finished", t.Finished.UTC().Format(time.RFC3339Nano), "Duration", taskDuration(t))
	}
	if len(t.Result) > 0 {
		pairs = append(pairs, "Result", string(t.Result))
	}
	if t.Error != "" {
		pairs = append(pairs, "Error", t.Error)
	}
	_ = kv(e.out, pairs...)
}
