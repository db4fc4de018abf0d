"""The one error decoding raises: it names the file and, for DICOM, the tag at fault."""

from kgreport.errors import InvalidInput, NotFound


class ImageDecodeError(InvalidInput):
    """An image, volume or DICOM file that cannot be turned into pixels.

    The message starts with the path ("CT_bad.dcm: no Pixel Data (7FE0,0010)") so a build log line
    is enough to find the file.
    """

    code = "image_unreadable"


class ImageNotFoundError(NotFound, FileNotFoundError):
    """No image file or series folder at the path asked for."""

    code = "not_found"  # the answer it always had (it was a plain FileNotFoundError)
