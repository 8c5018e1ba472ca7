// olm-validate runs every validator of github.com/operator-framework/api (the library operator-sdk's
// `bundle validate` uses) on an OLM bundle directory, without operator-sdk (which the Go module proxy does
// not serve).
//
//	olm-validate BUNDLE_DIR [K8S_VERSION]
//
// BUNDLE_DIR holds manifests/ and metadata/ (deploy/olm). The bundle is loaded like operator-sdk loads it
// (manifests.GetBundleFromDir), the package metadata is checked against metadata/annotations.yaml, then
// validation.AllValidators run on the bundle's objects with K8S_VERSION (the OperatorHub validator's
// k8s-version option; default the cluster version the project pins) and the bundle.Dockerfile as the
// community validator's index-path; the OperatorGroup of subscription.yaml goes to the OperatorGroup
// validator. Every error and warning is printed; the exit code is 1 when there is any error or warning,
// 2 when the bundle cannot be loaded.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/operator-framework/api/pkg/manifests"
	operatorsv1 "github.com/operator-framework/api/pkg/operators/v1"
	"github.com/operator-framework/api/pkg/validation"
	"github.com/operator-framework/api/pkg/validation/errors"
	"sigs.k8s.io/yaml"
)

type annotationsFile struct {
	Annotations map[string]string `json:"annotations"`
}

func main() {
	if len(os.Args) < 2 || len(os.Args) > 3 {
		fmt.Fprintln(os.Stderr, "usage: olm-validate BUNDLE_DIR [K8S_VERSION]")
		os.Exit(2)
	}
	dir := os.Args[1]
	k8sVersion := "1.37"
	if len(os.Args) == 3 {
		k8sVersion = os.Args[2]
	}

	bundle, err := manifests.GetBundleFromDir(filepath.Join(dir, "manifests"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot load the bundle: %v\n", err)
		os.Exit(2)
	}
	var problems []string

	// operator-sdk reads package and channels from metadata/annotations.yaml; GetBundleFromDir does not.
	raw, err := os.ReadFile(filepath.Join(dir, "metadata", "annotations.yaml"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot read metadata/annotations.yaml: %v\n", err)
		os.Exit(2)
	}
	var meta annotationsFile
	if err := yaml.UnmarshalStrict(raw, &meta); err != nil {
		fmt.Fprintf(os.Stderr, "metadata/annotations.yaml: %v\n", err)
		os.Exit(2)
	}
	for _, key := range []string{
		"operators.operatorframework.io.bundle.mediatype.v1",
		"operators.operatorframework.io.bundle.manifests.v1",
		"operators.operatorframework.io.bundle.metadata.v1",
		"operators.operatorframework.io.bundle.package.v1",
		"operators.operatorframework.io.bundle.channels.v1",
	} {
		if meta.Annotations[key] == "" {
			problems = append(problems, fmt.Sprintf("ERROR metadata/annotations.yaml: %s is missing", key))
		}
	}
	bundle.Package = meta.Annotations["operators.operatorframework.io.bundle.package.v1"]
	bundle.DefaultChannel = meta.Annotations["operators.operatorframework.io.bundle.channel.default.v1"]
	if ch := meta.Annotations["operators.operatorframework.io.bundle.channels.v1"]; ch != "" {
		bundle.Channels = splitComma(ch)
	}

	options := map[string]string{
		"k8s-version": k8sVersion,
		"index-path":  filepath.Join(dir, "bundle.Dockerfile"),
	}
	objs := append(bundle.ObjectsToValidate(), options)
	// The OperatorGroup of the install example (subscription.yaml) for the OperatorGroup validator.
	groups, err := operatorGroups(filepath.Join(dir, "subscription.yaml"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "subscription.yaml: %v\n", err)
		os.Exit(2)
	}
	if len(groups) == 0 {
		problems = append(problems, "ERROR subscription.yaml: no OperatorGroup")
	}
	for _, g := range groups {
		objs = append(objs, g)
	}
	results := validation.AllValidators.Validate(objs...)
	problems = append(problems, describe(results)...)
	sort.Strings(problems)
	for _, p := range problems {
		fmt.Println(p)
	}
	fmt.Fprintf(os.Stderr, "olm-validate: %d validators, %d results, %d problems\n",
		len(validation.AllValidators), len(results), len(problems))
	if len(problems) > 0 {
		os.Exit(1)
	}
}

// info is the one warning the OperatorHub validator gives whenever a Kubernetes version is passed
// (its source says it "might" become an info); it reports no problem.
const info = "checking APIs against Kubernetes version"

func describe(results []errors.ManifestResult) []string {
	var out []string
	for _, r := range results {
		for _, e := range r.Errors {
			out = append(out, fmt.Sprintf("ERROR %s: %s", r.Name, e.Error()))
		}
		for _, w := range r.Warnings {
			if strings.Contains(w.Error(), info) {
				fmt.Fprintf(os.Stderr, "INFO %s: %s\n", r.Name, w.Error())
				continue
			}
			out = append(out, fmt.Sprintf("WARNING %s: %s", r.Name, w.Error()))
		}
	}
	return out
}

func operatorGroups(path string) ([]*operatorsv1.OperatorGroup, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*operatorsv1.OperatorGroup
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var head struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			return nil, err
		}
		if head.Kind != "OperatorGroup" {
			continue
		}
		g := &operatorsv1.OperatorGroup{}
		if err := yaml.UnmarshalStrict([]byte(doc), g); err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}

func splitComma(s string) []string {
	var out []string
	for _, c := range strings.Split(s, ",") {
		if c = strings.TrimSpace(c); c != "" {
			out = append(out, c)
		}
	}
	return out
}
