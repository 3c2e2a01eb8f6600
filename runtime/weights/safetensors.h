// Umbrella header for reading safetensors weights: one file (SafetensorsFile, TensorInfo) and a
// model directory of one or more files (Checkpoint, LoadStats). Writing is in
// safetensors_writer.h.
#pragma once

#include "runtime/weights/checkpoint.h"        // IWYU pragma: export
#include "runtime/weights/safetensors_file.h"  // IWYU pragma: export
#include "runtime/weights/weight_check.h"      // IWYU pragma: export
