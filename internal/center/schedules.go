package center

import (
	"context"
	"net/http"
)

// registerSchedules adds the scheduled migrations' endpoints to mux.
func (c *Center) registerSchedules(mux *http.ServeMux) {}

// runSchedules runs the schedules that are due until ctx ends.
func (c *Center) runSchedules(ctx context.Context) {}
