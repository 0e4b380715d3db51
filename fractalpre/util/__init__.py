"""The bottom layer, shared by fractalpre and superres: atomic files and folder locks (`files`), one-line
usage errors and the command lines' parser (`usage`), the fingerprint of what made a result (`provenance`),
the one writer of output folders (`output_folder`), image grids and PNG bytes (`images`), and the CPU
allocator that trainers preload (`cpu_allocator`). Imports neither JAX nor anything else of the
package but its version."""
from fractalpre.util.files import (FolderLock, atomic_path, check_folder, check_writable, free_space, is_lock,
                                   is_out_of_space, is_temporary, temporary_name, write_atomic)
from fractalpre.util.images import (DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, UnreadableImage, float_to_uint8, image_grid,
                                    png_bytes, read_image)
from fractalpre.util.output_folder import OutputFolder
from fractalpre.util.usage import (ArgumentParser, UsageError, fail, one_line_exits, require_positive,
                                   usage_errors)

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "ArgumentParser", "OutputFolder", "UnreadableImage", "float_to_uint8", "read_image", "FolderLock", "UsageError", "atomic_path", "check_folder", "check_writable", "fail", "free_space", "is_out_of_space", "one_line_exits",
           "image_grid", "is_lock", "is_temporary", "png_bytes", "require_positive", "temporary_name",
           "usage_errors", "write_atomic"]
