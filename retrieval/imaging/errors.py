"""The one error decoding raises: it names the file and, for DICOM, the tag at fault."""


class ImageDecodeError(ValueError):
    """An image, volume or DICOM file that cannot be turned into pixels.

    The message starts with the path ("CT_bad.dcm: no Pixel Data (7FE0,0010)") so a build log line
    is enough to find the file.
    """
