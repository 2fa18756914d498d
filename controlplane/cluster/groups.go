package cluster

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// GroupCoordinatorKey holds the active controller's internal listener (GroupCoordinator).
const GroupCoordinatorKey = RootPrefix + "group-coordinator"

// GroupCoordinator is the value of GroupCoordinatorKey.
type GroupCoordinator struct {
	// Name is the control-plane member's name; Addr its internal listener (host:port).
	Name string `json:"name"`
	Addr string `json:"addr"`
}

// GroupKey returns the key of a consumer group's record. Group ids may hold any
// character, so they are path-escaped.
func GroupKey(group string) string { return GroupsPrefix + url.PathEscape(group) }

// GroupOffsetsPrefix returns the prefix of every committed offset of group.
func GroupOffsetsPrefix(group string) string {
	return OffsetsPrefix + url.PathEscape(group) + "/"
}

// OffsetKey returns the key of group's committed offset of one partition. Topic names
// cannot hold '/', so the key splits back unambiguously (ParseOffsetKey).
func OffsetKey(group, topic string, partition int32) string {
	return GroupOffsetsPrefix(group) + topic + "/" + strconv.Itoa(int(partition))
}

// ParseGroupKey returns the group id of a GroupsPrefix key.
func ParseGroupKey(key string) (string, error) {
	rest, ok := strings.CutPrefix(key, GroupsPrefix)
	if !ok {
		return "", fmt.Errorf("group key %q: not under %s", key, GroupsPrefix)
	}
	group, err := url.PathUnescape(rest)
	if err != nil {
		return "", fmt.Errorf("group key %q: %w", key, err)
	}
	return group, nil
}

// ParseOffsetKey splits an OffsetKey.
func ParseOffsetKey(key string) (group string, tp TopicPartition, err error) {
	rest, ok := strings.CutPrefix(key, OffsetsPrefix)
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 3 {
		return "", tp, fmt.Errorf("offset key %q: bad shape", key)
	}
	if group, err = url.PathUnescape(parts[0]); err != nil {
		return "", tp, fmt.Errorf("offset key %q: %w", key, err)
	}
	p, err := strconv.ParseInt(parts[2], 10, 32)
	if err != nil {
		return "", tp, fmt.Errorf("offset key %q: %w", key, err)
	}
	return group, TopicPartition{Topic: parts[1], Partition: int32(p)}, nil
}

// ParseHWKey splits an HWKey.
func ParseHWKey(key string) (TopicPartition, bool) {
	rest, ok := strings.CutPrefix(key, HWPrefix)
	i := strings.LastIndexByte(rest, '/')
	if !ok || i < 0 {
		return TopicPartition{}, false
	}
	p, err := strconv.ParseInt(rest[i+1:], 10, 32)
	if err != nil {
		return TopicPartition{}, false
	}
	return TopicPartition{Topic: rest[:i], Partition: int32(p)}, true
}
