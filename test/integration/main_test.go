package integration

import (
	"testing"

	"github.com/godwit/godwit/internal/labtest"
)

// home is GODWIT_HOME for every lab of this test run; set once by TestMain.
var home string

// TestMain refuses to run without what the tests need, rather than skipping.
func TestMain(m *testing.M) { labtest.Main(m, &home) }

func newLab(t *testing.T, hosts int) *labtest.Lab { return labtest.New(t, home, hosts) }
