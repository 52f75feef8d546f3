/**
 * onnxruntime's error messages name its C++ source files and functions
 * ("/onnxruntime_src/onnxruntime/core/providers/cpu/math/element_wise_ops.h:560 void
 * onnxruntime::BroadcastIterator::Init(ptrdiff_t, ptrdiff_t) axis == 1 ..."). They tell a client
 * nothing it can act on and tell an attacker the build; this keeps the rest of the message.
 */
const SOURCE_PATH = /(?:[A-Za-z]:)?[\w.\-/\\]*[/\\][\w.\-]+\.(?:cc|cpp|cxx|c|h|hpp|cu)(?::\d+)?/g;
/** A C++ signature right after the path: return type, qualified name, parameter list, const. */
const SIGNATURE = /(?:^|\s)(?:[A-Za-z_][\w<>,*&]*(?:::[\w<>,*&]+)*\s+)*\w+(?:::[\w~<>,]+)+\([^()]*\)(?:\s*const)?/g;

export function withoutSourcePaths(message: string): string {
  return message.replace(SOURCE_PATH, '').replace(SIGNATURE, '').replace(/\s{2,}/g, ' ').trim();
}
