"""Read and write images; find the input socket. The only place that touches SimpleITK images.

The input's geometry (size, spacing, origin, direction) travels as one `Geometry` object from
`read_image` to `write_mask`. Arrays are in SimpleITK's array order (z, y, x), exactly as nnU-Net's
SimpleITKIO reads them: no reorientation, so the networks see what they saw in training.
Every check on an input file lives here and raises `InputError` naming the file; what ITK prints on its
own (warnings, MetaIO's read reports) is captured around each ITK call and logged as one line.

    images.py      Geometry, read_image / read_labels / read_geometry, case ids, image suffixes
    stored.py      declared vs stored voxel data (truncated files), memory needed
    itk_output.py  ITK's own stderr captured per call, its exceptions in one sentence
    write.py       write_mask / save_probability_map (atomic), partial writes for signal handlers
    sockets.py     grand-challenge input and output sockets
"""

from .images import (IMAGE_SUFFIXES, Geometry, case_id, direction_problem, is_image_file, read_geometry,
                     read_image, read_labels, scan_images)
from .sockets import (INPUT_SOCKETS, OUTPUT_SOCKET, SocketInput, find_socket_input, output_mask_path,
                      single_image_in)
from .stored import bytes_text, memory_limit_bytes, stored_data_problem
from .write import check_mask_suffix, remove_partial_writes, save_probability_map, write_mask

__all__ = ["IMAGE_SUFFIXES", "INPUT_SOCKETS", "OUTPUT_SOCKET", "Geometry", "SocketInput", "bytes_text",
           "case_id", "check_mask_suffix", "direction_problem", "find_socket_input", "is_image_file",
           "memory_limit_bytes", "output_mask_path", "read_geometry", "read_image", "read_labels",
           "remove_partial_writes", "save_probability_map", "scan_images", "single_image_in",
           "stored_data_problem", "write_mask"]
