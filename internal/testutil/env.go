package testutil

import (
	"os"
)

// testLogs is whether GREGOR_TEST_LOG asks for the nodes' logs (on stderr).
var testLogs = os.Getenv("GREGOR_TEST_LOG") != ""

var logOut = os.Stderr
