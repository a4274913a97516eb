package robustness_test

import (
	"os"
	"testing"

	gc "gopkg.in/check.v1"
)

func TestPackage(t *testing.T) {
	defer func() {
		if presencedDir != "" {
			_ = os.RemoveAll(presencedDir)
		}
	}()
	gc.TestingT(t)
}
