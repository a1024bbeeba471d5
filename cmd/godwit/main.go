// Command godwit is the single Godwit binary: management server, host agent, lab and CLI.
package main

import (
	"os"

	"github.com/godwit/godwit/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
