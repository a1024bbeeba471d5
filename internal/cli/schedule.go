package cli

import "github.com/spf13/cobra"

// newScheduleCmd is `godwit schedule`.
func newScheduleCmd(e *env) *cobra.Command {
	return &cobra.Command{Use: "schedule", Short: "Scheduled migrations"}
}
