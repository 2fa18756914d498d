package client

import (
	"fmt"
	"sort"
	"strconv"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// AssignReplicas places rf replicas of partitions firstPartition..firstPartition+count-1
// on brokers, the way Kafka does (AdminUtils.assignReplicasToBrokers): brokers are
// ordered so that racks alternate, the preferred leader (first replica) of successive
// partitions walks that order from startIndex, and followers are placed at a shift
// that grows every len(brokers) partitions, so preferred leaders and replicas spread
// evenly and, with racks, each partition's replicas sit on as many racks as possible.
// Brokers without a rack each count as a rack of their own.
//
// The caller guarantees 1 <= rf <= len(brokers); anything else is a programmer error.
func AssignReplicas(brokers []cluster.Broker, count, rf int, firstPartition int32, startIndex int) [][]int32 {
	n := len(brokers)
	if rf < 1 || rf > n {
		panic(fmt.Sprintf("client: AssignReplicas rf=%d with %d brokers", rf, n))
	}
	ordered, rackOf := rackAlternated(brokers)
	racks := map[string]bool{}
	for _, r := range rackOf {
		racks[r] = true
	}
	numRacks := len(racks)
	start := ((startIndex % n) + n) % n
	// Kafka multiplies the follower shift by the number of racks so that successive
	// rounds keep landing on other racks; without racks it is the plain shift.
	shiftMul := numRacks
	if numRacks == n {
		shiftMul = 1
	}
	out := make([][]int32, 0, count)
	for i := 0; i < count; i++ {
		p := int(firstPartition) + i
		shift := start + p/n
		first := (p + start) % n
		leader := ordered[first]
		replicas := []int32{leader}
		usedRacks := map[string]bool{rackOf[leader]: true}
		usedBrokers := map[int32]bool{leader: true}
		for j := 0; j < rf-1; j++ {
			// With rf <= n a broker is always found within n steps of k.
			for k := 0; ; k++ {
				if k > 2*n {
					panic("client: AssignReplicas found no broker")
				}
				b := ordered[replicaIndex(first, shift*shiftMul, k, n)]
				r := rackOf[b]
				if (!usedRacks[r] || len(usedRacks) == numRacks) && (!usedBrokers[b] || len(usedBrokers) == n) {
					replicas = append(replicas, b)
					usedRacks[r] = true
					usedBrokers[b] = true
					break
				}
			}
		}
		out = append(out, replicas)
	}
	return out
}

// replicaIndex is Kafka's placement of the k-th follower candidate relative to the leader.
func replicaIndex(first, shift, k, n int) int {
	if n == 1 {
		return 0
	}
	s := 1 + (shift+k)%(n-1)
	return (first + s) % n
}

// rackAlternated orders broker ids so that consecutive ids are on different racks
// (rack1's first, rack2's first, …, rack1's second, …), and maps ids to racks.
func rackAlternated(brokers []cluster.Broker) ([]int32, map[int32]string) {
	rackOf := make(map[int32]string, len(brokers))
	byRack := map[string][]int32{}
	for _, b := range brokers {
		r := b.Rack
		if r == "" {
			r = "\x00" + strconv.Itoa(int(b.ID)) // no rack: a rack of its own
		}
		rackOf[b.ID] = r
		byRack[r] = append(byRack[r], b.ID)
	}
	rackNames := make([]string, 0, len(byRack))
	for r, ids := range byRack {
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		rackNames = append(rackNames, r)
	}
	sort.Strings(rackNames)
	if len(rackNames) == len(brokers) {
		// No two brokers share a rack: plain id order, as Kafka does without racks.
		ids := make([]int32, 0, len(brokers))
		for _, b := range brokers {
			ids = append(ids, b.ID)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		return ids, rackOf
	}
	out := make([]int32, 0, len(brokers))
	for round := 0; len(out) < len(brokers); round++ {
		for _, r := range rackNames {
			if ids := byRack[r]; round < len(ids) {
				out = append(out, ids[round])
			}
		}
	}
	return out, rackOf
}
