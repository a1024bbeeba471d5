package integration

import (
	"os"
	"testing"

	"github.com/godwit/godwit/internal/labtest"
)

// home is GODWIT_HOME for every lab of this test run; set once by TestMain.
var home string

// TestMain refuses to run without what the tests need, rather than skipping.
func TestMain(m *testing.M) {
	h, cleanup := labtest.Require()
	home = h
	code := m.Run()
	cleanup()
	os.Exit(code)
}

func newLab(t *testing.T, hosts int) *labtest.Lab { return labtest.New(t, home, hosts) }
