package replica

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gregor-streaming/gregor/segment"
)

// topicIDFile names, in a replica's directory, the file that says which topic the
// directory belongs to (Kafka's partition.metadata): directories are named after the
// topic's name, and a topic deleted and created again under the same name while the node
// was down would otherwise find the old topic's log and serve it as its own.
const topicIDFile = "partition.metadata"

// readTopicID returns the topic id recorded in dir, or "" when dir has none (a
// directory made before the file existed, or not made yet).
func readTopicID(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, topicIDFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("topic_id: ")); ok {
			return strings.TrimSpace(string(v)), nil
		}
	}
	return "", fmt.Errorf("replica: %s in %s names no topic id", topicIDFile, dir)
}

// writeTopicID records id in dir, durably.
func writeTopicID(dir, id string) error {
	return segment.WriteFileAtomic(filepath.Join(dir, topicIDFile), []byte("version: 0\ntopic_id: "+id+"\n"))
}
