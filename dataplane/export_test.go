package dataplane

// What the tests of package dataplane_test, which run the data plane on the cluster
// harness, share with this package's own tests: Kafka wire helpers, sample requests,
// and pure functions whose answers those tests compare a node's with. Nothing here reads
// a running node.

var (
	FrameRequest       = frameRequest
	ReadAnswer         = readAnswer
	RoundTrip          = roundTrip
	CheckServesOn      = checkServesOn
	SampleGroupRequest = sampleGroupRequest
	GroupCoordinator   = groupCoordinator
	WaitPastMillis     = waitPastMillis
)

// FindCoordinator's key types.
const (
	CoordinatorTypeGroup       = coordinatorTypeGroup
	CoordinatorTypeTransaction = coordinatorTypeTransaction
)

// ForwardedGroupAPIs are the keys of the APIs forwarded to the group coordinator, each
// with a refusal for when it cannot be (TestGroupAPIsAdvertised).
func ForwardedGroupAPIs() []int16 {
	var keys []int16
	for _, a := range apis {
		if groupRefusals[a.key] != nil {
			keys = append(keys, a.key)
		}
	}
	return keys
}
