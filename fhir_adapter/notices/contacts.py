"""Who, besides the plan, a member can turn to: the contacts every denial notice prints (pure).

Each default is the public number or address as published, with its source beside it; a plan
overrides any of them (FHIR_ADAPTER_NOTICE_* settings) with what its DHCS-approved template says.
Checked 2026-12 against regulatory.md §5.6; re-verify before go-live.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RightsContacts:
    """The State Hearing, DMHC, Ombudsman and legal-help contacts, as the letter prints them."""

    # CDSS State Hearings Division: the number DHCS "Your Rights" attachments give for asking
    # for a State Hearing by phone (libertydentalplan.com ma_Your_Rights_English; CDSS
    # https://www.cdss.ca.gov/hearing-requests).
    hearing_phone: str = "1-800-743-8525"
    # CDSS TDD, same sources; regulatory.md §5.6 lists it with the Public Inquiry line.
    hearing_tdd: str = "1-800-952-8349"
    # CDSS State Hearings Division mailing address (regulatory.md §5.6; DHCS "Medi-Cal Fair
    # Hearing" page; CDSS).
    hearing_address: tuple[str, ...] = (
        "California Department of Social Services",
        "State Hearings Division",
        "P.O. Box 944243, Mail Station 9-17-37",
        "Sacramento, CA 94244-2430",
    )
    # CDSS online hearing requests (https://www.cdss.ca.gov/hearing-requests).
    hearing_online: str = "https://www.cdss.ca.gov/hearing-requests"
    # CDSS State Hearings Division fax (regulatory.md §5.6, DHCS "Medi-Cal Fair Hearing" page).
    hearing_fax: str = "916-651-5210 or 916-651-2789"
    # CDSS Public Inquiry and Response: hearing rights and free legal aid referrals
    # (regulatory.md §5.6; DHCS "Your Rights": "ask about your hearing rights or free legal aid").
    legal_help_phone: str = "1-800-952-5253"
    legal_help_tdd: str = "1-800-952-8349"
    # DMHC Help Center: HSC 1368.02(b) prescribes these numbers and the website in the statement
    # (regulatory.md §5.6).
    dmhc_phone: str = "1-888-466-2219"
    dmhc_tdd: str = "1-877-688-9891"
    dmhc_website: str = "www.dmhc.ca.gov"
    # Medi-Cal Managed Care Ombudsman, DHCS Office of the Ombudsman (regulatory.md §5.6 [S];
    # dhcs.ca.gov "Office of the Ombudsman").
    ombudsman_phone: str = "1-888-452-8609"
    # Civil rights complaints, as DHCS nondiscrimination notices print them (DHCS Office of
    # Civil Rights; U.S. HHS Office for Civil Rights, hhs.gov/ocr) [S; verify].
    dhcs_civil_rights_phone: str = "916-440-7370"
    hhs_civil_rights_phone: str = "1-800-368-1019"
    hhs_civil_rights_tdd: str = "1-800-537-7697"


DEFAULT_RIGHTS_CONTACTS = RightsContacts()
